"""The array backend: device/dtype selection, host<->device copies, random streams."""
import os
import subprocess
import sys

import numpy as np
import pytest

from dist_nn import backend


def test_use_and_using_restore_the_previous_choice():
    assert backend.xp is np and backend.float_dtype == np.float32
    with backend.using("cpu", "float64"):
        assert backend.float_dtype == np.float64
    assert backend.float_dtype == np.float32


def test_bad_choices_are_named():
    with pytest.raises(ValueError, match="device must be one of"):
        backend.use("tpu")
    with pytest.raises(ValueError, match="dtype must be one of"):
        backend.use(dtype="float16")
    if not backend.gpu_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU is usable"):
            backend.use("gpu")
        with backend.using("auto"):
            assert backend.device == "cpu"


def test_environment_variables_choose_at_import():
    code = "from dist_nn import backend; print(backend.device, backend.float_dtype.__name__)"
    env = dict(os.environ, DIST_NN_DEVICE="cpu", DIST_NN_DTYPE="float64", DIST_NN_HOST_TUNING="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["cpu", "float64"]


def test_host_device_round_trip():
    a = np.arange(6.0).reshape(2, 3)
    on_device = backend.to_device(a, dtype=np.float32)
    assert on_device.dtype == np.float32
    np.testing.assert_array_equal(backend.to_host(on_device), a)


def draws(stream, rank, per_rank=True, seed=7):
    backend.seed(seed, rank)
    return backend.generator(stream, per_rank=per_rank).random(5)


def test_streams_are_reproducible_and_independent():
    np.testing.assert_array_equal(draws("dropout", 0), draws("dropout", 0))
    assert not np.allclose(draws("dropout", 0), draws("dropout", 1))   # per rank
    assert not np.allclose(draws("dropout", 0), draws("augment", 0))   # per stream
    assert not np.allclose(draws("dropout", 0), draws("dropout", 0, seed=8))
    # a shared stream is the same on every rank (initialisation)
    np.testing.assert_array_equal(draws("init", 0, False), draws("init", 3, False))


def test_extra_seed_key_rederives_streams():
    backend.seed(7, 0, 12)
    a = backend.generator("dropout").random(3)
    backend.seed(7, 0, 13)
    assert not np.allclose(a, backend.generator("dropout").random(3))
