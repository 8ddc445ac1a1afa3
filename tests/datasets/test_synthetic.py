import h5py
import numpy
import pytest

from datasets import synthetic
from tests.datasets.readback import read_back


def make(tmp_path, name, **options):
    settings = dict(samples=600, shape=(3, 16, 16), classes=6, val_samples=300, seed=3)
    path = synthetic.convert(tmp_path / name, **{**settings, **options})[0]
    return read_back(path, "train"), read_back(path, "val")


def test_deterministic_per_seed(tmp_path):
    (a, a_labels, _), _ = make(tmp_path, "a.h5")
    (b, b_labels, _), _ = make(tmp_path, "b.h5")
    (c, c_labels, _), _ = make(tmp_path, "c.h5", seed=4)
    numpy.testing.assert_array_equal(a, b)
    numpy.testing.assert_array_equal(a_labels, b_labels)
    assert not numpy.array_equal(a, c) and not numpy.array_equal(a_labels, c_labels)


def test_balanced_labels_and_value_ranges(tmp_path):
    (x, y, data), (val_x, val_y, _) = make(tmp_path, "u8.h5")
    assert x.shape == (600, 3, 16, 16) and x.dtype == numpy.uint8 and val_x.shape[0] == 300
    assert numpy.bincount(y).tolist() == [100] * 6 and set(val_y) == set(range(6))
    assert data.num_classes == 6 and x.min() < 60 and x.max() > 195  # uses the range
    (f, _, _), _ = make(tmp_path, "f32.h5", dtype="float32", classes=3)
    assert f.dtype == numpy.float32 and 0 <= f.min() < 0.25 and 0.75 < f.max() <= 1


def test_learnable_by_nearest_class_mean(tmp_path):
    (x, y, _), (val_x, val_y, _) = make(tmp_path, "s.h5", noise=2.0)
    x, val_x = (a.reshape(len(a), -1).astype(numpy.float64) for a in (x, val_x))
    means = numpy.stack([x[y == c].mean(axis=0) for c in range(6)])
    guess = ((val_x[:, None, :] - means[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert (guess == val_y).mean() > 0.8  # chance is 1/6


def test_bad_settings(tmp_path):
    with pytest.raises(ValueError, match=r"got shape \(3, 16\)"):
        synthetic.convert(tmp_path / "s.h5", 10, shape=(3, 16))
    with pytest.raises(ValueError, match="samples must be uint8 or float32"):
        synthetic.convert(tmp_path / "s.h5", 10, dtype="float64")


def test_a_validation_split_by_default(tmp_path):
    path = synthetic.convert(tmp_path / "d.h5", 50, shape=(1, 4, 4), classes=5)[0]
    assert len(read_back(path, "train")[1]) == 50 and len(read_back(path, "val")[1]) == 10
    path = synthetic.convert(tmp_path / "n.h5", 50, shape=(1, 4, 4), val_samples=0)[0]
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["train"]
