"""Conv2d (dist_nn/nn/conv.py, with the windows of dist_nn/nn/windows.py)."""
import numpy as np
import pytest

from dist_nn import backend, nn
from dist_nn.nn import conv as conv_module

from . import reference_check as check
from .test_batchnorm import in_channels_last_memory

CASES = check.cases("conv")
# against PyTorch (stored and live), in float32, and by central differences
test_matches_torch_fixture, test_matches_torch_live, test_float32_matches, \
    test_gradients = check.reference_tests(CASES)


def test_parameter_shapes_follow_pytorch():
    conv = nn.Conv2d(3, 8, (3, 2))
    assert conv.weight.shape == (8, 3, 3, 2) and conv.bias.shape == (8,)
    assert conv.weight.weight_decay and not conv.bias.weight_decay
    assert nn.Conv2d(3, 8, 1, bias=False).bias is None


@pytest.mark.parametrize("shape", [(2, 4, 5, 5), (2, 3, 5), (3, 5, 5)])
def test_wrong_input_shape_names_the_layer(shape):
    with pytest.raises(ValueError, match=r"Conv2d expects input \(N, 3, H, W\)"):
        nn.Conv2d(3, 2, 3).forward(np.zeros(shape, dtype=np.float32))


def test_input_smaller_than_kernel():
    with pytest.raises(ValueError, match="Conv2d input 2x5 is smaller than its kernel 3x3"):
        nn.Conv2d(1, 1, 3).forward(np.zeros((1, 1, 2, 5), dtype=np.float32))


def test_non_contiguous_input_gives_the_same_result():
    with backend.using("cpu", "float64"):
        conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 6, 7, 3))
    x_view = x.transpose(0, 3, 2, 1)  # (2, 3, 7, 6), not contiguous
    dy = np.random.default_rng(1).standard_normal((2, 4, 4, 3))
    y_view, dx_view = conv.forward(x_view), conv.backward(dy)
    grad_view = conv.weight.grad.copy()
    conv.zero_grad()
    y, dx = conv.forward(np.ascontiguousarray(x_view)), conv.backward(dy)
    np.testing.assert_allclose(y_view, y, rtol=1e-13)
    np.testing.assert_allclose(dx_view, dx, rtol=1e-13)
    np.testing.assert_allclose(grad_view, conv.weight.grad, rtol=1e-13)


def test_gradients_accumulate_over_backward_calls():
    with backend.using("cpu", "float64"):
        conv = nn.Conv2d(2, 3, 3, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4))
    dy = np.random.default_rng(1).standard_normal((2, 3, 4, 4))
    conv.forward(x)
    conv.backward(dy)
    once = conv.weight.grad.copy(), conv.bias.grad.copy()
    conv.backward(dy)
    np.testing.assert_allclose(conv.weight.grad, 2 * once[0], rtol=1e-14)
    np.testing.assert_allclose(conv.bias.grad, 2 * once[1], rtol=1e-14)


@pytest.mark.parametrize("case", CASES)
def test_nhwc_layout_matches_torch(case, monkeypatch):
    """Every case again with NHWC columns (the "auto" layout takes them from 16 channels)."""
    monkeypatch.setattr(conv_module, "NHWC_FROM_CHANNELS", 1)
    assert check.build_loaded(case, check.split_fixture(case)[0]).nhwc
    check.check_against_fixture(case)
    check.check_float32(case)
    check.check_case_gradients(case)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_layouts_agree_on_a_wide_layer(layout):
    """The two layouts on a 32-channel layer give the same results."""
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((3, 32, 6, 5)), rng.standard_normal((3, 8, 3, 3))
    results = []
    for chosen in ("nchw", layout):
        with backend.using("cpu", "float64"):
            backend.seed(0)
            conv = nn.Conv2d(32, 8, 3, stride=2, padding=1, layout=chosen)
        results.append((conv.forward(x), conv.backward(dy), conv.weight.grad, conv.bias.grad))
    for ours, reference in zip(*results):
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-13)
    assert nn.Conv2d(16, 8, 3).nhwc and not nn.Conv2d(8, 8, 3).nhwc


@pytest.mark.parametrize("stride", [1, 2])  # input gradient by convolution, by col2im
@pytest.mark.parametrize("dy_channels_last", [False, True])
def test_nhwc_layers_hand_on_channels_last_memory(stride, dy_channels_last):
    """An NHWC layer's output and input gradient are (N, C, H, W) arrays in channels-last
    memory, with the NCHW layout's values; its input and dy may come in either memory."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 16, 7, 6))
    results, dy = [], None
    for layout in ("nchw", "nhwc"):
        with backend.using("cpu", "float64"):
            backend.seed(0)
            conv = nn.Conv2d(16, 5, 3, stride=stride, padding=1, layout=layout)
        y = conv.forward(x if layout == "nchw" else in_channels_last_memory(x))
        dy = rng.standard_normal(y.shape) if dy is None else dy  # one dy for both layouts
        dx = conv.backward(in_channels_last_memory(dy) if dy_channels_last else dy)
        assert nn.channels_last(y) == nn.channels_last(dx) == (layout == "nhwc")
        results.append((y, dx, conv.weight.grad, conv.bias.grad))
    for ours, reference in zip(*results):
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-13)


def test_unknown_layout():
    with pytest.raises(ValueError, match="Conv2d layout must be 'auto', 'nchw' or 'nhwc'"):
        nn.Conv2d(3, 2, 3, layout="nchwc")


@pytest.mark.skipif(nn.kernels.numba is None, reason="numba is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_compiled_col2im_equals_numpy(case, dtype):
    """The compiled scatter of column gradients (strided convolutions) against kh*kw NumPy
    additions, on every case."""
    check.check_compiled_equals_numpy(case, dtype)


def test_columns_in_batch_slices_give_the_same_result(monkeypatch):
    """Columns built a few samples at a time (COLUMN_BYTES) give what one slice gives."""
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((5, 3, 6, 6)), rng.standard_normal((5, 4, 3, 3))
    results = []
    for column_bytes in (2**30, 1):  # one slice; one sample at a time
        monkeypatch.setattr(conv_module, "COLUMN_BYTES", column_bytes)
        for stride in (1, 2):
            with backend.using("cpu", "float64"):
                backend.seed(0)
                conv = nn.Conv2d(3, 4, 3, stride=stride, padding=1)
            y = conv.forward(x)
            results.append((y, conv.backward(dy if stride == 2 else np.ones_like(y)),
                            conv.weight.grad, conv.bias.grad))
    for whole, sliced in zip(results[:2], results[2:]):
        for a, b in zip(whole, sliced):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
