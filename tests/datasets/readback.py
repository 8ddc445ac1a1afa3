"""Reading a converted data set back with the trainer's own reader, to compare with its source."""
import h5py
import numpy

from dist_nn.data import HDF5Split, shard_files


def read_back(path, split):
    """(x, y, HDF5Split) of a split of a file or of a glob of shard files."""
    data = HDF5Split(path, split)
    try:
        return data.read(numpy.arange(len(data))), data.labels, data
    finally:
        data.close()


def assert_holds(path, splits, num_classes):
    """The file (or shards) at `path` hold exactly `splits` {name: (x, y)}, in order, and no
    other split; with num_classes and the per-channel mean/std of the training samples."""
    for file in shard_files(path):
        with h5py.File(file, "r") as f:
            assert sorted(f) == sorted(splits), file
    for split, (x, y) in splits.items():
        got_x, got_y, data = read_back(path, split)
        assert got_x.dtype == x.dtype and got_x.shape == x.shape
        numpy.testing.assert_array_equal(got_x, x)
        numpy.testing.assert_array_equal(got_y, y)
        assert got_y.dtype == numpy.int64 and data.num_classes == num_classes
    train = splits["train"][0].astype(numpy.float64)
    numpy.testing.assert_allclose(data.mean, train.mean(axis=(0, 2, 3)), rtol=1e-9)
    numpy.testing.assert_allclose(data.std, train.std(axis=(0, 2, 3)), rtol=1e-6, atol=1e-9)
