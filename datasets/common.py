"""What several converters share: the one write loop through DatasetWriter, reading exact byte
counts from possibly compressed streams, and checking labels against the file they came from."""
import zipfile
import zlib

import numpy

from dist_nn import backend
from dist_nn.data import DatasetWriter

PIECE_BYTES = 8 << 20  # samples handed to the writer at once
DAMAGED = (OSError, EOFError, zlib.error, zipfile.BadZipFile)  # corrupt or cut-short streams


def piece_samples(sample_bytes):
    """How many samples of `sample_bytes` each make one piece of about PIECE_BYTES."""
    return max(1, PIECE_BYTES // sample_bytes)


def write(out, num_classes, sample_shape, dtype, splits, source, attrs=None, **output):
    """Write `splits` {name: (count, blocks)}, where blocks yields (x, y) in order, through
    DatasetWriter (attrs: extra file attributes; output: its shards, chunk_samples,
    compression, progress); returns the written paths. Blocks of any size are appended in
    pieces, so memory holds one block."""
    counts = {name: count for name, (count, _) in splits.items()}
    step = piece_samples(numpy.dtype(dtype).itemsize * int(numpy.prod(sample_shape)))
    with DatasetWriter(out, num_classes, sample_shape, dtype, counts, source, attrs=attrs,
                       **output) as writer:
        for name, (_, blocks) in splits.items():
            for x, y in blocks:
                for start in range(0, len(x), step):
                    writer.append(name, x[start:start + step], y[start:start + step])
    return writer.paths


def read(f, size, where):
    """Up to `size` bytes from f; a damaged compressed stream is a ValueError naming `where`."""
    try:
        return f.read(size)
    except DAMAGED as error:
        raise ValueError(f"{where} is damaged or truncated ({error})") from None


def read_exact(f, size, where):
    """Exactly `size` bytes from f; a shorter read means the file is truncated."""
    data = read(f, size, where)
    if len(data) != size:
        raise ValueError(f"{where} is truncated: expected {size} more bytes, found {len(data)}")
    return data


def check_labels_fit(count, item_bytes, where):
    """ValueError unless `count` labels, read whole (then joined and checked as int64), fit
    in the free memory: a few MB of compressed zeros can declare gigabytes."""
    need = 3 * count * max(item_bytes, 8)
    free = backend.free_memory()
    if need > free:
        raise ValueError(f"{where} declares {count} labels, {need / 2**30:.1f} GiB to read and "
                         f"check, more than the {free / 2**30:.1f} GiB free")


def check_labels(labels, num_classes, where):
    """Labels as int64, or a ValueError naming `where` if any lies outside [0, num_classes)."""
    labels = numpy.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{where}: labels must be integers, got {labels.dtype}")
    bad = numpy.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise ValueError(f"{where}: label {labels[bad[0]]} at index {bad[0]} is outside "
                         f"[0, {num_classes})")
    return labels.astype(numpy.int64)
