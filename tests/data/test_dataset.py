"""HDF5Split: reading in any order, the in-memory cache, and every bad input's message."""
import re

import numpy as np
import pytest

from dist_nn.data import DataError, DatasetWriter, HDF5Split, open_split
from dist_nn.distributed import LocalCommunicator
from tests.data.conftest import write_raw
from tests.distributed import mpi


@pytest.fixture
def stored(tmp_path, samples):
    x, y = samples
    with DatasetWriter(tmp_path / "d", 10, (3, 5, 5), np.uint8, {"train": 40}, "t", shards=2,
                       chunk_samples=4) as w:
        w.append("train", x, y)
    return tmp_path / "d-*.h5", x, y


@pytest.mark.parametrize("indices", [
    [3, 1, 2, 0], [5, 5, 6, 39, 20], list(range(40)), [17], list(range(8, 16)) + [1, 30],
])
def test_reads_any_order_with_repeats_across_shards(stored, indices):
    path, x, _ = stored
    split = HDF5Split(path)
    np.testing.assert_array_equal(split.read(indices), x[indices])
    assert split.load_into_memory(10**6)
    np.testing.assert_array_equal(split.read(indices), x[indices])


def test_cache_respects_its_budget(stored):
    split = HDF5Split(stored[0])
    assert not split.load_into_memory(40 * 75 - 1) and split.cache is None


def float_file(tmp_path, bad_value):
    x = np.zeros((6, 1, 2, 2), dtype=np.float32)
    x[4, 0, 0, 1] = bad_value
    return write_raw(tmp_path / "f.h5", x, np.zeros(6, dtype=np.int64), num_classes=2)


def truncated(tmp_path, samples):
    path = write_raw(tmp_path / "t.h5", *samples)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def second_shard_differs(tmp_path, samples):
    x, y = samples
    write_raw(tmp_path / "s-00000-of-00002.h5", x, y)
    write_raw(tmp_path / "s-00001-of-00002.h5", x[:, :, :4], y)
    return tmp_path / "s-*.h5"


BAD_INPUTS = {
    "missing file": (lambda tmp, s: tmp / "nope.h5", "does not exist"),
    "no glob match": (lambda tmp, s: tmp / "nope-*.h5", "no files match"),
    "truncated file": (truncated, "truncated, damaged or not HDF5"),
    "not HDF5": (lambda tmp, s: (tmp / "x.h5").write_text("hello") and tmp / "x.h5",
                 "truncated, damaged or not HDF5"),
    "missing dataset": (lambda tmp, s: write_raw(tmp / "m.h5", s[0], None),
                        "has no /train/y dataset"),
    "x/y length mismatch": (lambda tmp, s: write_raw(tmp / "l.h5", s[0], s[1][:-3]),
                            r"/train/x \(40, 3, 5, 5\) and /train/y \(37,\)"),
    "label out of range": (lambda tmp, s: write_raw(tmp / "r.h5", s[0], s[1], num_classes=5),
                           r"labels outside \[0, 5\), the first at sample"),
    "shards with different shapes": (second_shard_differs, "shards differ in sample shape"),
    "missing attributes": (lambda tmp, s: write_raw(tmp / "a.h5", *s, attrs={"mean": [0, 0]}),
                           r"mean must hold 3 finite numbers \(one per channel\), got \[0 0\]"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_are_named(tmp_path, samples, case):
    make, message = BAD_INPUTS[case]
    with pytest.raises(DataError, match=message):
        open_split(make(tmp_path, samples), "train", LocalCommunicator())


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_float_samples(tmp_path, bad_value):
    with pytest.raises(DataError, match="train sample 4 contains NaN or Inf"):
        open_split(float_file(tmp_path, bad_value), "train", LocalCommunicator())


def test_labels_out_of_range_in_a_later_shard_name_the_file(tmp_path, samples):
    x, y = samples
    write_raw(tmp_path / "s-00000-of-00002.h5", x, y)
    write_raw(tmp_path / "s-00001-of-00002.h5", x, np.full(40, 12))
    with pytest.raises(DataError, match="s-00001-of-00002.h5: 40 train labels"):
        HDF5Split(tmp_path / "s-*.h5")


def test_missing_val_split(stored):
    with pytest.raises(DataError, match="has no /val/x dataset"):
        HDF5Split(stored[0], "val")


def nan_in_second_half(tmp_path):
    x = np.zeros((8, 1, 2, 2), dtype=np.float32)
    x[6, 0, 1, 0] = np.inf  # only the last rank's share holds it
    return write_raw(tmp_path / "f.h5", x, np.zeros(8, dtype=np.int64), num_classes=2)


@mpi.needs_mpi
@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("nan", "rank 1: .*f.h5: train sample 6 contains NaN or Inf"),
    ("ranks", r"the train split of .* has fewer samples \(1\) than there are ranks \(2\)"),
])
def test_every_rank_reports_the_same_error(tmp_path, samples, case, message):
    x, y = samples
    path = {"missing": lambda: tmp_path / "nope.h5",
            "nan": lambda: nan_in_second_half(tmp_path),
            "ranks": lambda: write_raw(tmp_path / "one.h5", x[:1], y[:1])}[case]()
    done = mpi.launch(2, "open_data", path, timeout=60)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("[rank")]
    assert sorted(line[:8] for line in lines) == ["[rank 0]", "[rank 1]"], done.stderr
    assert len({line[9:] for line in lines}) == 1  # the same message on both
    assert re.search(message, lines[0])
