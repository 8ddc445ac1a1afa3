"""CIFAR-10 and CIFAR-100, "python version" (https://www.cs.toronto.edu/~kriz/cifar.html):
a directory of pickled batches, or the original .tar.gz read member by member (no extraction).

Each batch is a pickled dict with bytes keys: b'data' uint8 (n, 3072), each row a 3x32x32
image in CHW order, and the labels (b'labels'; b'fine_labels' / b'coarse_labels' for
CIFAR-100). Pickle is used only here, in this one-off converter, because it is the format the
data set is published in. Unpickling can run code, so the batches are read by a restricted
unpickler that admits only what the official batches hold (dicts, lists, bytes, numbers and
NumPy arrays): a file that names anything else (os.system, ...) is refused unrun. Training
never reads pickles: it reads the HDF5 file written here.

The batches are read twice, one at a time: first to count and validate them (DatasetWriter lays
out the shards from the counts), then to write them. Memory holds one batch.
"""
import os
import pickle
import tarfile

import numpy

from .common import check_labels, write

IMAGE_SHAPE = (3, 32, 32)
# the only callables a CIFAR batch's pickle names: NumPy's array reconstruction (NumPy 1 and
# 2 module names, pickle protocols 2 to 5) and Python 3's bytes encoding (protocol 2)
ADMITTED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class HostilePickle(pickle.UnpicklingError):
    """A pickle that names a callable no CIFAR batch holds."""


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ADMITTED:
            raise HostilePickle(f"it names {module}.{name}, which no CIFAR batch holds; "
                                "refused without running it")
        return super().find_class(module, name)
SOURCES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def convert(source, out, variant="cifar10", coarse=False, **output):
    """Convert CIFAR-10 (variant "cifar10") or CIFAR-100 ("cifar100", fine labels, or the 20
    coarse ones) from `source` (a directory of batches or the .tar.gz): train -> /train,
    test -> /val. output: DatasetWriter options. Returns the written paths."""
    if variant == "cifar10":
        batches = {"train": [f"data_batch_{k}" for k in range(1, 6)], "val": ["test_batch"]}
        key, classes = b"labels", 10
    elif variant == "cifar100":
        batches = {"train": ["train"], "val": ["test"]}
        key, classes = (b"coarse_labels", 20) if coarse else (b"fine_labels", 100)
    else:
        raise ValueError(f"unknown CIFAR variant {variant!r}: expected one of {sorted(SOURCES)}")
    with _Batches(source) as archive:
        def blocks(names):
            for name in names:
                yield _load(archive, name, key, classes)
        counts = {split: sum(len(y) for _, y in blocks(names)) for split, names in batches.items()}
        splits = {split: (counts[split], blocks(names)) for split, names in batches.items()}
        label_set = f", {key.decode()}" if variant == "cifar100" else ""
        return write(out, classes, IMAGE_SHAPE, numpy.uint8, splits,
                     f"{SOURCES[variant]} (python version{label_set}) from {source}", **output)


class _Batches:
    """The batch files of a directory or of a tar archive, opened by file name."""

    def __init__(self, source):
        self.source, self.tar = os.fspath(source), None
        if os.path.isdir(self.source):
            return
        if not os.path.isfile(self.source):
            raise ValueError(f"{self.source}: no such directory or archive")
        try:
            self.tar = tarfile.open(self.source)
            self.members = {os.path.basename(m.name): m for m in self.tar if m.isfile()}
        except (tarfile.TarError, EOFError, OSError) as error:
            self.close()
            raise ValueError(f"{self.source}: not a readable CIFAR directory or tar archive "
                             f"({error})") from None

    def where(self, name):
        """How error messages name a batch: its path, or archive:member."""
        if self.tar is None:
            return os.path.join(self.source, name)
        return f"{self.source}:{self.members[name].name}"

    def open(self, name):
        if self.tar is None:
            path = os.path.join(self.source, name)
            if not os.path.isfile(path):
                raise ValueError(f"{path}: missing CIFAR batch file")
            return open(path, "rb")
        if name not in self.members:
            raise ValueError(f"{self.source}: the archive has no CIFAR batch {name!r}")
        return self.tar.extractfile(self.members[name])

    def close(self):
        if self.tar is not None:
            self.tar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _load(archive, name, key, classes):
    """(x (n, 3, 32, 32) uint8, y (n,) int64) of one batch, validated."""
    with archive.open(name) as f:
        where = archive.where(name)
        try:
            batch = _BatchUnpickler(f, encoding="bytes").load()
        except HostilePickle as error:
            raise ValueError(f"{where}: not a CIFAR batch: {error}") from None
        except Exception as error:  # unpickling a damaged file can raise almost anything
            raise ValueError(f"{where}: truncated or not a pickled CIFAR batch "
                             f"({type(error).__name__}: {error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or key not in batch:
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{where}: expected a dict with b'data' and {key!r}, found {found}")
    data, size = numpy.asarray(batch[b"data"]), int(numpy.prod(IMAGE_SHAPE))
    if data.dtype != numpy.uint8 or data.ndim != 2 or data.shape[1] != size:
        raise ValueError(f"{where}: b'data' must be uint8 (n, {size}), got {data.dtype} "
                         f"{data.shape}")
    labels = check_labels(batch[key], classes, where)
    if len(labels) != len(data):
        raise ValueError(f"{where}: {len(data)} images but {len(labels)} labels")
    return data.reshape((-1,) + IMAGE_SHAPE), labels
