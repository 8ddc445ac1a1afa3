import gzip
import struct

import numpy
import pytest

from datasets import mnist
from tests.datasets.readback import assert_holds

NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx(array, magic):
    """An idx file's bytes: big-endian magic and dimensions, then the raw unsigned bytes."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write_idx(path, contents, gzipped):
    if gzipped:
        path = path.with_name(path.name + ".gz")
        contents = gzip.compress(contents)
    path.write_bytes(contents)


@pytest.fixture
def idx_files(tmp_path):
    """MNIST-format files (train images gzipped, the rest not); returns the folder and splits."""
    rng = numpy.random.default_rng(0)
    splits = {}
    for split, n in (("train", 7), ("val", 5)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=numpy.uint8)
        y = rng.integers(0, 10, n, dtype=numpy.uint8)
        images, labels = NAMES[split]
        write_idx(tmp_path / images, idx(x, 2051), gzipped=split == "train")
        write_idx(tmp_path / labels, idx(y, 2049), gzipped=False)
        splits[split] = (x[:, None], y.astype(numpy.int64))
    return tmp_path, splits


def test_round_trip_plain_and_gzipped(idx_files, tmp_path):
    folder, splits = idx_files
    assert_holds(mnist.convert(folder, tmp_path / "mnist.h5")[0], splits, 10)


def test_shards(idx_files, tmp_path):
    folder, splits = idx_files
    paths = mnist.convert(folder, tmp_path / "out" / "mnist", shards=3)
    assert [p.name for p in paths] == [f"mnist-{k:05d}-of-00003.h5" for k in range(3)]
    assert_holds(str(tmp_path / "out" / "mnist-*.h5"), splits, 10)


def rewrite(folder, name, change):
    """Replace idx file `name` (gzipped or not) by change(its uncompressed bytes)."""
    path = folder / name
    gzipped = not path.exists()
    path = path.with_name(name + ".gz") if gzipped else path
    contents = path.read_bytes()
    new = change(gzip.decompress(contents) if gzipped else contents)
    path.unlink()
    if new is not None:
        write_idx(folder / name, new, gzipped)


@pytest.mark.parametrize("name, change, message", [
    ("t10k-labels-idx1-ubyte", lambda b: None,
     "neither t10k-labels-idx1-ubyte nor t10k-labels-idx1-ubyte.gz is there"),
    ("t10k-images-idx3-ubyte", lambda b: struct.pack(">I", 2049) + b[4:],
     "t10k-images-idx3-ubyte: magic number 2049, expected 2051"),
    ("train-labels-idx1-ubyte", lambda b: struct.pack(">I", 2051) + b[4:],
     "train-labels-idx1-ubyte: magic number 2051, expected 2049"),
    ("t10k-images-idx3-ubyte", lambda b: b[:-100], "t10k-images-idx3-ubyte is truncated"),
    ("train-images-idx3-ubyte", lambda b: b[:-100], "train-images-idx3-ubyte.gz is truncated"),
    ("train-images-idx3-ubyte", lambda b: b[:10], "train-images-idx3-ubyte.gz is truncated"),
    ("t10k-labels-idx1-ubyte", lambda b: b + b"\0", "t10k-labels-idx1-ubyte is longer than"),
    ("train-labels-idx1-ubyte", lambda b: struct.pack(">II", 2049, 6) + b[8:14],
     "train-images-idx3-ubyte.gz holds 7 images but its labels file holds 6 labels"),
    ("t10k-labels-idx1-ubyte", lambda b: b[:-1] + b"\x0a",
     "t10k-labels-idx1-ubyte: label 10 at index 4 is outside"),
    ("t10k-images-idx3-ubyte", lambda b: struct.pack(">IIII", 2051, 5, 14, 56) + b[16:],
     "train and t10k images differ in size"),
])
def test_malformed_files_are_named(idx_files, tmp_path, name, change, message):
    folder, _ = idx_files
    rewrite(folder, name, change)
    with pytest.raises(ValueError, match=message):
        mnist.convert(folder, tmp_path / "mnist.h5")
    assert list(tmp_path.glob("mnist*")) == []  # nothing half-written is left behind


@pytest.mark.parametrize("change", [lambda gz: gz[:-30], lambda gz: b"this is not gzip data"])
def test_damaged_gzip_stream(idx_files, tmp_path, change):
    folder, _ = idx_files
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(change(path.read_bytes()))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is damaged or truncated"):
        mnist.convert(folder, tmp_path / "mnist.h5")


def test_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="absent: no such directory"):
        mnist.convert(tmp_path / "absent", tmp_path / "mnist.h5")


def test_labels_declared_beyond_the_free_memory_are_refused_before_they_are_read(idx_files,
                                                                                tmp_path):
    from dist_nn import backend
    if backend.free_memory() > 89 * 2**30:
        pytest.skip("this machine could hold the 89 GiB: the idx format's largest count fits")
    folder, _ = idx_files
    # 4 billion labels declared, none stored: a gzip of zeros would hold them in a few MB
    write_idx(folder / NAMES["train"][1], struct.pack(">II", 2049, 4_000_000_000),
              gzipped=False)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte declares 4000000000 labels, "
                                         r"89.4 GiB to read and check, more than the"):
        mnist.convert(folder, tmp_path / "m.h5")
