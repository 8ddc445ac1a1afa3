"""Flatten (dist_nn/nn/flatten.py)."""
import numpy as np

from dist_nn import nn

from . import reference_check as check

CASES = check.cases("flatten")
# against PyTorch (stored and live), in float32, and by central differences
test_matches_torch_fixture, test_matches_torch_live, test_float32_matches, \
    test_gradients = check.reference_tests(CASES)


def test_flatten_keeps_the_batch_dimension_and_c_order():
    x = np.arange(24.0).reshape(2, 3, 2, 2)
    layer = nn.Flatten()
    y = layer.forward(x)
    np.testing.assert_array_equal(y, x.reshape(2, 12))
    np.testing.assert_array_equal(layer.backward(y), x)
    assert nn.Flatten().forward(np.ones((1, 5))).shape == (1, 5)


def test_flatten_of_a_non_contiguous_input():
    x = np.arange(24.0).reshape(2, 4, 3).transpose(0, 2, 1)
    layer = nn.Flatten()
    np.testing.assert_array_equal(layer.forward(x), np.ascontiguousarray(x).reshape(2, 12))
    assert layer.backward(np.ones((2, 12))).shape == (2, 3, 4)
