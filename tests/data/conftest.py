"""Small HDF5 files for the data tests, written raw (bypassing DatasetWriter's checks) where a
test needs a broken one."""
import h5py
import numpy as np
import pytest


def write_raw(path, x, y, num_classes=10, split="train", attrs=None):
    with h5py.File(path, "w") as f:
        if x is not None:
            f[f"{split}/x"] = x
        if y is not None:
            f[f"{split}/y"] = y
        channels = x.shape[1] if x is not None and x.ndim > 1 else 1
        f.attrs.update({"num_classes": num_classes, "mean": np.zeros(channels),
                        "std": np.ones(channels), "source": "test", **(attrs or {})})
    return path


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 3, 5, 5), dtype=np.uint8), rng.integers(0, 10, 40)
