"""The switch of the optional compiled kernels (dist_nn/nn/kernels.py); each kernel's equality
with its NumPy formula is tested beside its layer (tests/nn/test_batchnorm.py)."""
import numpy as np
import pytest

from dist_nn import nn
from dist_nn.nn import kernels

needs_numba = pytest.mark.skipif(kernels.numba is None, reason="numba is not installed")


@needs_numba
def test_usable_only_for_numpy_float32_and_float64_of_one_dtype():
    f32, f64 = np.zeros(3, np.float32), np.zeros(3)
    with kernels.using(True):
        assert kernels.usable(f32, f32) and kernels.usable(f64)
        assert not kernels.usable(f32, f64)
        assert not kernels.usable(np.zeros(3, np.float16))
        assert not kernels.usable([0.0, 1.0])  # not an ndarray (e.g. a CuPy array)
    with kernels.using(False):
        assert not kernels.usable(f32) and kernels.status() == "off (DIST_NN_KERNELS=0)"


def test_without_numba_nothing_is_usable(monkeypatch):
    monkeypatch.setattr(kernels, "numba", None)
    with kernels.using(True):
        assert not kernels.usable(np.zeros(3))
    assert kernels.status() == "off (numba not installed)"


def test_float16_batchnorm_takes_the_numpy_formula():
    """Dtypes the kernels do not take (float16 here; bfloat16 alike) still run, in NumPy."""
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2))
    bn, relu = nn.BatchNorm2d(3), nn.ReLU()
    nn.fuse_relu(bn, relu)
    bn.weight.data, bn.bias.data = bn.weight.data.astype(np.float16), bn.bias.data.astype(np.float16)
    bn.weight.grad, bn.bias.grad = bn.weight.grad.astype(np.float16), bn.bias.grad.astype(np.float16)
    y = bn.forward(x.astype(np.float16))
    dx = bn.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == np.float16
    expected = np.maximum((x - x.mean(axis=(0, 2, 3), keepdims=True))
                          / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + 1e-5), 0)
    np.testing.assert_allclose(y, expected, atol=5e-3)
