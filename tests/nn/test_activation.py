"""ReLU, LeakyReLU, PReLU, ELU, Sigmoid and Tanh (dist_nn/nn/activation.py)."""
import math
import warnings

import numpy as np
import pytest

from dist_nn import backend, nn

from . import reference_check as check

CASES = check.cases("activation")
# against PyTorch (stored and live), in float32, and by central differences
test_matches_torch_fixture, test_matches_torch_live, test_float32_matches, \
    test_gradients = check.reference_tests(CASES)


EXTREMES = np.array([-1e4, -800.0, -100.0, -40.0, -20.0, -1.0, 0.0, 1.0, 20.0, 40.0, 100.0,
                     800.0, 1e4])


def exact_sigmoid(values):
    """The textbook forms, each on the side where its exp cannot overflow."""
    return np.array([1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))
                     for v in values])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", [nn.Sigmoid, nn.Tanh, nn.ELU], ids=lambda c: c.__name__)
def test_large_inputs_give_no_overflow_warnings(cls, dtype):
    layer = cls()
    x = EXTREMES.astype(dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y = layer.forward(x)
        dx = layer.backward(np.ones_like(x))
    assert y.dtype == dtype and dx.dtype == dtype
    assert np.isfinite(y).all() and np.isfinite(dx).all()


def test_sigmoid_is_accurate_in_both_tails():
    """Relative accuracy also where sigmoid(x) is tiny (x << 0), as PyTorch's."""
    y = nn.Sigmoid().forward(EXTREMES)
    np.testing.assert_allclose(y, exact_sigmoid(EXTREMES), rtol=1e-14, atol=0)
    assert y[0] == 0.0 and y[-1] == 1.0 and y[6] == 0.5
    assert 0 < y[3] < 1e-17  # sigmoid(-40) = 4.2e-18, not rounded to zero


def test_elu_saturates_at_minus_alpha():
    y = nn.ELU(alpha=0.7).forward(np.array([-800.0, -50.0, 3.0]))
    np.testing.assert_allclose(y, [-0.7, -0.7, 3.0], rtol=1e-15)


def test_relu_family_gradient_at_zero_follows_pytorch():
    """PyTorch's derivative at exactly 0 is the negative side's: 0 for ReLU, the slope else."""
    x, dy = np.zeros(3), np.ones(3)
    with backend.using("cpu", "float64"):
        layers = [(nn.ReLU(), 0.0), (nn.LeakyReLU(0.2), 0.2), (nn.PReLU(init=0.3), 0.3)]
    for layer, slope in layers:
        layer.forward(x)
        np.testing.assert_array_equal(layer.backward(dy), slope * dy)


def test_prelu_weight():
    with backend.using("cpu", "float64"):
        shared, channels = nn.PReLU(), nn.PReLU(4, init=0.1)
    assert shared.weight.shape == (1,) and shared.weight.data[0] == 0.25
    assert channels.weight.shape == (4,) and (channels.weight.data == 0.1).all()
    assert not shared.weight.weight_decay  # decay would pull the slope towards a plain ReLU


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5, 5), (4,)])
def test_prelu_channel_mismatch_names_the_layer(shape):
    with pytest.raises(ValueError, match=r"PReLU\(4\) expects 4 channels in dim 1"):
        nn.PReLU(4).forward(np.ones(shape, dtype=np.float32))
