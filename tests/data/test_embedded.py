"""The embedded default data set."""
import numpy as np

from dist_nn.data import HDF5Split, embedded


def test_embedded_digits_build_into_the_layout(tmp_path):
    [path] = embedded.build(tmp_path / "digits.h5")
    train, val = HDF5Split(path), HDF5Split(path, "val")
    assert (len(train), len(val)) == (1438, 359) and train.sample_shape == (1, 8, 8)
    assert train.num_classes == 10 and set(train.labels.tolist()) == set(range(10))
    images, labels = embedded.arrays()
    assert images.shape == (1797, 1, 8, 8) and images.max() == 16
    seen = np.concatenate([train.read(np.arange(len(train))), val.read(np.arange(len(val)))])
    assert sorted(map(bytes, seen)) == sorted(map(bytes, images))  # every image exactly once
    np.testing.assert_allclose(train.mean, train.read(np.arange(len(train))).mean())


def test_without_validation_there_is_no_val_split(tmp_path):
    [path] = embedded.build(tmp_path / "d.h5", val_fraction=0, chunk_samples=100)
    assert len(HDF5Split(path)) == 1797
    assert "val" not in HDF5Split(path).handles[0]
