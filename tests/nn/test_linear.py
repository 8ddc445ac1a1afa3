"""Linear and Maxout (dist_nn/nn/linear.py)."""
import numpy as np
import pytest

from dist_nn import backend, nn

from . import reference_check as check

CASES = check.cases("linear")
# against PyTorch (stored and live), in float32, and by central differences
test_matches_torch_fixture, test_matches_torch_live, test_float32_matches, \
    test_gradients = check.reference_tests(CASES)


def test_parameter_shapes_and_decay_flags():
    layer = nn.Linear(5, 3)
    assert layer.weight.shape == (3, 5) and layer.bias.shape == (3,)
    assert layer.weight.weight_decay and not layer.bias.weight_decay
    maxout = nn.Maxout(5, 3, pieces=4)
    assert maxout.weight.shape == (12, 5) and maxout.bias.shape == (12,)
    assert nn.Linear(5, 3, bias=False).bias is None


@pytest.mark.parametrize("layer", [nn.Linear(4, 2), nn.Maxout(4, 2, 3)], ids=["Linear", "Maxout"])
@pytest.mark.parametrize("shape", [(3, 5), (3, 4, 1), (4,)])
def test_wrong_input_shape_names_the_layer(layer, shape):
    with pytest.raises(ValueError, match=rf"{type(layer).__name__} expects input \(N, 4\)"):
        layer.forward(np.zeros(shape, dtype=np.float32))


def test_maxout_needs_a_piece():
    with pytest.raises(ValueError, match="pieces"):
        nn.Maxout(4, 2, 0)


def test_maxout_tie_sends_the_gradient_to_one_piece():
    with backend.using("cpu", "float64"):
        layer = nn.Maxout(3, 2, pieces=2, bias=False)
    layer.weight.data[1] = layer.weight.data[0]  # unit 0: two identical pieces, always tied
    x = np.random.default_rng(0).standard_normal((4, 3))
    layer.forward(x)
    dx = layer.backward(np.ones((4, 2)))
    assert np.array_equal(layer.weight.grad[0], x.sum(axis=0))  # the first piece wins
    assert not layer.weight.grad[1].any()
    unit1_piece = (x @ layer.weight.data[2:].T).argmax(axis=1)
    np.testing.assert_allclose(dx, layer.weight.data[0] + layer.weight.data[2 + unit1_piece])
