"""BatchNorm1d and BatchNorm2d without a communicator (dist_nn/nn/batchnorm.py); SyncBN
across ranks is tested with the distributed code."""
import itertools

import numpy as np
import pytest

from dist_nn import backend, nn

from . import reference_check as check

CASES = check.cases("batchnorm")
# against PyTorch (stored and live), in float32, and by central differences
test_matches_torch_fixture, test_matches_torch_live, test_float32_matches, \
    test_gradients = check.reference_tests(CASES)


def make_bn(cls=nn.BatchNorm2d, channels=3, **kwargs):
    with backend.using("cpu", "float64"):
        return cls(channels, **kwargs)


def test_state_names_and_flags():
    bn = nn.BatchNorm2d(3)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]
    assert not bn.weight.weight_decay and not bn.bias.weight_decay
    assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.shape == ()
    assert [n for n, _ in nn.BatchNorm1d(3, affine=False).named_parameters()] == []


def test_running_statistics_follow_the_momentum_rule():
    bn = make_bn(momentum=0.25)
    rng = np.random.default_rng(0)
    mean, var = np.zeros(3), np.ones(3)
    for step in range(3):
        x = rng.normal(step, 1.0 + step, (4, 3, 2, 5))
        bn.forward(x)
        mean = 0.75 * mean + 0.25 * x.mean(axis=(0, 2, 3))
        var = 0.75 * var + 0.25 * x.var(axis=(0, 2, 3), ddof=1)  # unbiased, as PyTorch
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-13)
    np.testing.assert_allclose(bn.running_var, var, rtol=1e-13)
    assert bn.num_batches_tracked == 3


def test_momentum_none_is_the_cumulative_average():
    bn = make_bn(nn.BatchNorm1d, momentum=None)
    xs = np.random.default_rng(0).normal(1.0, 2.0, (3, 8, 3))
    for x in xs:
        bn.forward(x)
    np.testing.assert_allclose(bn.running_mean, xs.mean(axis=1).mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(bn.running_var, xs.var(axis=1, ddof=1).mean(axis=0), rtol=1e-13)


def test_eval_uses_and_keeps_the_running_statistics():
    bn = make_bn(nn.BatchNorm1d, channels=2).eval()
    bn.running_mean[...] = [1.0, -2.0]
    bn.running_var[...] = [4.0, 0.25]
    bn.weight.data[...] = [2.0, 3.0]
    bn.bias.data[...] = [0.5, 0.0]
    x = np.array([[3.0, -1.0], [1.0, -2.5]])
    inv_std = 1 / np.sqrt(np.array([4.0, 0.25]) + bn.eps)
    np.testing.assert_allclose(bn.forward(x), (x - [1.0, -2.0]) * inv_std * [2, 3] + [0.5, 0],
                               rtol=1e-14)
    assert bn.running_mean.tolist() == [1.0, -2.0] and bn.num_batches_tracked == 0


def test_eval_backward_after_training_uses_the_running_statistics():
    """Backward in eval mode must not reuse the batch statistics cached by a training step."""
    bn = make_bn(channels=2)
    rng = np.random.default_rng(0)
    bn.forward(rng.normal(2.0, 3.0, (4, 2, 3, 3)))
    bn.backward(rng.standard_normal((4, 2, 3, 3)))
    bn.eval()
    x, dy = rng.standard_normal((2, 2, 3, 3)), rng.standard_normal((2, 2, 3, 3))
    bn.forward(x)
    gain = bn.weight.data / np.sqrt(bn.running_var + bn.eps)
    np.testing.assert_allclose(bn.backward(dy), dy * gain[:, None, None], rtol=1e-14)
    check.assert_gradients(bn, x)


def test_training_needs_more_than_one_value_per_channel():
    with pytest.raises(ValueError, match="BatchNorm1d in training needs more than one value"):
        nn.BatchNorm1d(3).forward(np.ones((1, 3), dtype=np.float32))
    nn.BatchNorm1d(3).eval().forward(np.ones((1, 3), dtype=np.float32))  # fine in eval


@pytest.mark.parametrize("cls, shape", [
    (nn.BatchNorm1d, (4, 5)), (nn.BatchNorm1d, (4, 3, 2, 2)), (nn.BatchNorm1d, (3,)),
    (nn.BatchNorm2d, (4, 3)), (nn.BatchNorm2d, (4, 2, 5, 5)), (nn.BatchNorm2d, (4, 3, 5)),
])
def test_wrong_input_shape_names_the_layer(cls, shape):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\(3\) expects input"):
        cls(3).forward(np.ones(shape, dtype=np.float32))


needs_gpu = pytest.mark.skipif(not backend.gpu_available(),
                               reason="needs CuPy and a GPU (or DIST_NN_CUPY_STANDIN=1)")
DEVICES = ["cpu", pytest.param("gpu", marks=[pytest.mark.gpu, needs_gpu])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("offset", [0.0, 1e3, 1e4])
def test_float32_is_accurate_far_from_zero(offset, device):
    """On the CPU each rank sums x minus its own batch mean in float32 and forms E[x^2] -
    E[x]^2 in float64; the GPU kernels sum x and x^2 in float64 and subtract the mean in
    float64: data far from zero (offset + N(0, 1)) normalises to float32 precision on the
    very first batch (PyTorch's float32 error is ~6e-4 at offset 1e4)."""
    x = (offset + np.random.default_rng(0).standard_normal((32, 4, 6, 6))).astype(np.float32)
    with backend.using(device, "float32"):
        bn = nn.BatchNorm2d(4)
        y = backend.to_host(bn.forward(backend.to_device(x)))
    x64 = x.astype(np.float64)
    expected = (x64 - x64.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(
        x64.var(axis=(0, 2, 3), keepdims=True) + bn.eps)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, atol=5e-6)


def in_channels_last_memory(a):
    """a's values, in memory whose fastest-varying index is the channel (dim 1)."""
    to_last = (0, *range(2, a.ndim), 1)
    return np.ascontiguousarray(a.transpose(to_last)).transpose(np.argsort(to_last))


def run_pair(case, fused, compiled, dtype, channels_last=False, device="cpu"):
    """y, dx and parameter gradients of a BatchNorm case followed by a ReLU, fused or not, as
    NumPy arrays; with channels_last, x and dy come in channels-last memory and y and dx must
    keep it."""
    inputs, _ = check.split_fixture(case)
    with backend.using(device, dtype):
        bn, relu = check.build_loaded(case, inputs, dtype, device), nn.ReLU()
        if fused:
            nn.fuse_relu(bn, relu)
        x, dy = inputs["x"].astype(dtype), inputs["dy"].astype(dtype)
        if channels_last:
            x, dy = in_channels_last_memory(x), in_channels_last_memory(dy)
        x, dy = backend.to_device(x), backend.to_device(dy)
        with nn.kernels.using(compiled):
            y = relu.forward(bn.forward(x)).copy(order="K")
            dx = bn.backward(relu.backward(dy))
        if channels_last:
            assert nn.channels_last(y) and nn.channels_last(dx)
        grads = [p.grad for p in bn.parameters()]
        return [backend.to_host(a) for a in [y, dx, *grads, bn.running_mean, bn.running_var,
                                             bn.num_batches_tracked]]


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-12), ("float32", 2e-6)])
@pytest.mark.parametrize("case", CASES)
def test_fused_relu_and_compiled_kernels_equal_the_numpy_formula(case, dtype, tolerance):
    """BatchNorm then ReLU: fused or not, compiled kernels (when numba is installed) or NumPy,
    inputs in channels-last memory or not, every path gives what the unfused NumPy formula (checked against PyTorch above) gives."""
    reference = run_pair(case, fused=False, compiled=False, dtype=dtype)
    paths = [(True, False)] + ([(False, True), (True, True)] if nn.kernels.numba else [])
    layouts = [False, True] if check.split_fixture(case)[0]["x"].ndim > 2 else [False]
    for (fused, compiled), channels_last in itertools.product(paths, layouts):
        ours_all = run_pair(case, fused, compiled, dtype, channels_last)
        for ours, expected in zip(ours_all, reference):
            assert ours.dtype == expected.dtype
            scale = max(np.abs(expected).max(), 1.0)
            np.testing.assert_allclose(ours, expected, rtol=0, atol=tolerance * scale,
                                       err_msg=f"fused={fused} compiled={compiled} "
                                               f"channels_last={channels_last}")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-12), ("float32", 2e-6)])
@pytest.mark.parametrize("case", CASES)
def test_gpu_kernels_equal_the_numpy_formula(case, dtype, tolerance):
    """The GPU path (nn/batchnorm_gpu.py: one CUDA kernel a pass), fused with the ReLU or not,
    in channels-last memory or not, gives what the NumPy formula gives."""
    reference = run_pair(case, fused=False, compiled=False, dtype=dtype)
    layouts = [False, True] if check.split_fixture(case)[0]["x"].ndim > 2 else [False]
    for fused, channels_last in itertools.product([False, True], layouts):
        ours_all = run_pair(case, fused, False, dtype, channels_last, device="gpu")
        for ours, expected in zip(ours_all, reference):
            assert ours.dtype == expected.dtype
            scale = max(np.abs(expected).max(), 1.0)
            np.testing.assert_allclose(ours, expected, rtol=0, atol=tolerance * scale,
                                       err_msg=f"fused={fused} channels_last={channels_last}")
