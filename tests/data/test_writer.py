"""DatasetWriter: the layout, shards, statistics, validation and atomic publication."""
import errno
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from dist_nn.data import DatasetWriter, HDF5Split

ROOT = Path(__file__).resolve().parents[2]


def write(path, x, y, shards=1, **options):
    with DatasetWriter(path, 10, x.shape[1:], x.dtype, {"train": len(x)}, "test", shards=shards,
                       **options) as writer:
        for start in range(0, len(x), 7):  # in pieces, crossing shard boundaries
            writer.append("train", x[start:start + 7], y[start:start + 7])
    return writer.paths


def test_layout_attributes_and_statistics(tmp_path, samples):
    x, y = samples
    [path] = write(tmp_path / "d.h5", x, y, chunk_samples=8, compression="gzip")
    with h5py.File(path) as f:
        assert f["train/x"].shape == (40, 3, 5, 5) and f["train/x"].dtype == np.uint8
        assert f["train/x"].chunks == (8, 3, 5, 5) and f["train/x"].compression == "gzip"
        assert f["train/y"].dtype == np.int64 and f.attrs["num_classes"] == 10
        np.testing.assert_allclose(f.attrs["mean"], x.mean(axis=(0, 2, 3)))
        np.testing.assert_allclose(f.attrs["std"], x.std(axis=(0, 2, 3)))
        assert f.attrs["source"] == "test"


def test_shards_hold_contiguous_shares(tmp_path, samples):
    x, y = samples
    paths = write(tmp_path / "d", x, y, shards=3)
    assert [p.name for p in paths] == [f"d-0000{k}-of-00003.h5" for k in range(3)]
    with h5py.File(paths[0]) as f:
        assert len(f["train/x"]) == 13
    split = HDF5Split(tmp_path / "d-*.h5")
    np.testing.assert_array_equal(split.read(np.arange(40)), x)
    np.testing.assert_array_equal(split.labels, y)


@pytest.mark.parametrize("bad, message", [
    (lambda x, y: (x, y + 10), r"labels must be integers in \[0, 10\)"),
    (lambda x, y: (x.astype(np.float32), y), "samples are float32, this file stores uint8"),
    (lambda x, y: (x[:, :2], y), r"expected x \(n, 3, 5, 5\)"),
    (lambda x, y: (x, y[:-1]), r"expected x \(n, 3, 5, 5\) and y \(n,\)"),
])
def test_bad_samples_are_refused_and_nothing_is_left(tmp_path, samples, bad, message):
    x, y = bad(*samples)
    with pytest.raises(ValueError, match=message):
        with DatasetWriter(tmp_path / "d.h5", 10, (3, 5, 5), np.uint8, {"train": 40}, "t") as w:
            w.append("train", x, y)
    assert list(tmp_path.iterdir()) == []


def test_nan_in_float_samples_is_refused(tmp_path):
    x = np.zeros((4, 1, 2, 2), dtype=np.float32)
    x[2, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        with DatasetWriter(tmp_path / "d.h5", 2, (1, 2, 2), np.float32, {"train": 4}, "t") as w:
            w.append("train", x, np.zeros(4, dtype=np.int64))


def test_an_incomplete_split_is_not_published(tmp_path, samples):
    x, y = samples
    with pytest.raises(ValueError, match="incomplete splits.*train 20/40"):
        with DatasetWriter(tmp_path / "d.h5", 10, (3, 5, 5), np.uint8, {"train": 40}, "t") as w:
            w.append("train", x[:20], y[:20])
    assert list(tmp_path.iterdir()) == []


def test_extra_attributes_travel_with_every_shard(tmp_path, samples):
    x, y = samples
    with DatasetWriter(tmp_path / "d", 10, (3, 5, 5), np.uint8, {"train": 40}, "t", shards=2,
                       attrs={"class_names": [f"c{k}" for k in range(10)]}) as w:
        w.append("train", x, y)
    assert HDF5Split(tmp_path / "d-*.h5").class_names == [f"c{k}" for k in range(10)]


def test_empty_splits_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"must not be empty: \['val'\]"):
        DatasetWriter(tmp_path / "d.h5", 2, (1, 2, 2), np.uint8, {"train": 3, "val": 0}, "t")


def test_a_file_that_cannot_fit_is_refused_before_writing(tiny_tmpfs):
    """HDF5 cannot close a file whose disk filled up under it (the process then crashes at
    exit), so a data set larger than the free space is refused before anything is written."""
    disk = tiny_tmpfs("64k")
    with pytest.raises(OSError, match="MiB needed") as error:
        DatasetWriter(disk / "big.h5", 10, (3, 32, 32), np.uint8, {"train": 1000}, "test")
    assert error.value.errno == errno.ENOSPC and not list(disk.iterdir())
    done = subprocess.run([sys.executable, "-m", "datasets", "synthetic", "--samples", "1000",
                           "--shape", "3", "32", "32", "--out", str(disk / "s.h5")], cwd=ROOT,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "MiB needed" in done.stderr and "Traceback" not in \
        done.stderr, done.stderr
