"""MaxPool2d, AvgPool2d and GlobalAvgPool2d (dist_nn/nn/pooling.py)."""
import numpy as np
import pytest

from dist_nn import nn
from tests.reference import fixtures

from . import reference_check as check
from .test_batchnorm import in_channels_last_memory

CASES = check.cases("pooling")
# against PyTorch (stored and live), in float32, and by central differences
test_matches_torch_fixture, test_matches_torch_live, test_float32_matches, \
    test_gradients = check.reference_tests(CASES)


def test_stride_defaults_to_the_kernel_size():
    assert nn.MaxPool2d(3).stride == (3, 3)
    assert nn.AvgPool2d((2, 3)).stride == (2, 3)
    assert nn.MaxPool2d(3, stride=1).stride == (1, 1)


@pytest.mark.skipif(nn.kernels.numba is None, reason="numba is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_compiled_max_pool_equals_numpy(case, dtype):
    check.check_compiled_equals_numpy(case, dtype)


@pytest.fixture(params=[False, True], ids=["numpy", "compiled"])
def compiled(request):
    if request.param and nn.kernels.numba is None:
        pytest.skip("numba is not installed")
    with nn.kernels.using(request.param):
        yield


def test_max_pool_tie_sends_the_gradient_to_the_first_maximum(compiled):
    """Constant windows: PyTorch routes each window's gradient to its first element."""
    x = np.ones((1, 2, 4, 6))
    dy = np.arange(1.0, 13.0).reshape(1, 2, 2, 3)
    pool = nn.MaxPool2d(2)
    pool.forward(x)
    dx = pool.backward(dy)
    expected = np.zeros_like(x)
    expected[:, :, ::2, ::2] = dy
    np.testing.assert_array_equal(dx, expected)
    torch = fixtures.torch_or_none()
    if torch is not None:
        xt = torch.tensor(x, requires_grad=True)
        torch.nn.MaxPool2d(2)(xt).backward(torch.tensor(dy))
        np.testing.assert_array_equal(dx, xt.grad.numpy())


def test_max_pool_padding_never_wins(compiled):
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all negative: a zero pad would win
    y = nn.MaxPool2d(3, stride=1, padding=1).forward(x)
    assert (y < 0).all()
    assert y[0, 0, 1, 1] == -1.0 and y[0, 0, 2, 2] == -5.0


def test_max_pool_window_with_nan_is_nan(compiled):
    """A NaN anywhere in a window makes its maximum NaN, as in PyTorch (and numpy.maximum)."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = x[0, 0, 3, 2] = np.nan
    y = nn.MaxPool2d(2).forward(x)
    np.testing.assert_array_equal(np.isnan(y), [[[[True, False], [False, True]]]])
    np.testing.assert_array_equal(y[0, 0, [0, 1], [1, 0]], [7.0, 13.0])


@pytest.mark.parametrize("cls", [nn.MaxPool2d, nn.AvgPool2d])
def test_padding_above_half_the_kernel_is_refused(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: padding \(2, 2\) must be at most half"):
        cls(3, padding=2)


@pytest.mark.parametrize("layer", [nn.MaxPool2d(2), nn.AvgPool2d(2), nn.GlobalAvgPool2d()],
                         ids=["MaxPool2d", "AvgPool2d", "GlobalAvgPool2d"])
@pytest.mark.parametrize("shape", [(2, 3, 4), (4, 4), (1, 2, 3, 4, 5)])
def test_wrong_input_shape_names_the_layer(layer, shape):
    with pytest.raises(ValueError, match=rf"{type(layer).__name__} expects input \(N, C, H, W\)"):
        layer.forward(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("cls", [nn.MaxPool2d, nn.AvgPool2d])
def test_input_smaller_than_the_kernel(cls):
    with pytest.raises(ValueError, match=f"{cls.__name__} input 2x5 is smaller than its kernel"):
        cls(3).forward(np.zeros((1, 1, 2, 5), dtype=np.float32))


@pytest.mark.parametrize("layer", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1),
                                   nn.AvgPool2d(2), nn.GlobalAvgPool2d()],
                         ids=["max", "max-padded", "avg", "global-avg"])
def test_channels_last_input_gives_the_same_results(layer, compiled):
    """Input in channels-last memory (an NHWC convolution's output): the same values, and the
    output and input gradient keep that memory order."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6, 6))
    y = layer.forward(x).copy()
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    y_last = layer.forward(in_channels_last_memory(x))
    dx_last = layer.backward(in_channels_last_memory(dy) if dy.ndim == 4 else dy)
    np.testing.assert_allclose(y_last, y, rtol=1e-14)  # a mean may sum in another order
    np.testing.assert_allclose(dx_last, dx, rtol=1e-14)
    assert nn.channels_last(dx_last) and (y_last.ndim == 2 or nn.channels_last(y_last))
