"""MNIST and Fashion-MNIST (the same files): the official idx files, each optionally gzipped.
train-* -> /train and t10k-* -> /val; images (N, 1, 28, 28) uint8, 10 classes.

An idx file is a big-endian header (a magic number: 2051 for 3-dimensional unsigned-byte images,
2049 for 1-dimensional unsigned-byte labels; then one uint32 per dimension) followed by the raw
bytes. Images are read in pieces, so memory does not grow with the file.
"""
import gzip
import os
import struct

import numpy

from .common import check_labels, check_labels_fit, piece_samples, read, read_exact, write

CLASSES = 10
IMAGES, LABELS = 2051, 2049
DIMENSIONS = {IMAGES: 3, LABELS: 1}
PREFIXES = {"train": "train", "val": "t10k"}


def convert(directory, out, **output):
    """Convert the four idx files in `directory`; output: DatasetWriter options. Returns the
    written paths."""
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: no such directory")
    splits, sizes = {}, {}
    for split, prefix in PREFIXES.items():
        images = _find(directory, f"{prefix}-images-idx3-ubyte")
        labels = _read_labels(_find(directory, f"{prefix}-labels-idx1-ubyte"))
        with _open(images) as f:
            count, rows, cols = _header(f, images, IMAGES)
        if count != len(labels):
            raise ValueError(f"{images} holds {count} images but its labels file holds "
                             f"{len(labels)} labels")
        sizes[images] = (rows, cols)
        splits[split] = (count, _image_blocks(images, labels))
    if len(set(sizes.values())) > 1:
        raise ValueError("train and t10k images differ in size: " + ", ".join(
            f"{path} {rows}x{cols}" for path, (rows, cols) in sizes.items()))
    return write(out, CLASSES, (1, rows, cols), numpy.uint8, splits,
                 f"MNIST-format idx files from {directory}", **output)


def _find(directory, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    raise ValueError(f"{directory}: neither {name} nor {name}.gz is there")


def _open(path):
    return gzip.open(path) if path.endswith(".gz") else open(path, "rb")


def _header(f, path, magic):
    """The dimensions of an idx file after checking its magic number."""
    found, = struct.unpack(">I", read_exact(f, 4, path))
    if found != magic:
        kind = "images" if magic == IMAGES else "labels"
        raise ValueError(f"{path}: magic number {found}, expected {magic} (idx unsigned-byte "
                         f"{kind}); is it the right file?")
    return struct.unpack(f">{DIMENSIONS[magic]}I", read_exact(f, 4 * DIMENSIONS[magic], path))


def _check_end(f, path):
    if read(f, 1, path):
        raise ValueError(f"{path} is longer than its header says")


def _read_labels(path):
    with _open(path) as f:
        count, = _header(f, path, LABELS)
        check_labels_fit(count, 1, path)
        labels = numpy.frombuffer(read_exact(f, count, path), numpy.uint8)
        _check_end(f, path)
    return check_labels(labels, CLASSES, path)


def _image_blocks(path, labels):
    """(x (n, 1, rows, cols), y) pieces of an idx image file, read as they are written."""
    with _open(path) as f:
        count, rows, cols = _header(f, path, IMAGES)
        step = piece_samples(rows * cols)
        for start in range(0, count, step):
            n = min(step, count - start)
            x = numpy.frombuffer(read_exact(f, n * rows * cols, path), numpy.uint8)
            yield x.reshape(n, 1, rows, cols), labels[start:start + n]
        _check_end(f, path)
