"""Plain .npz arrays: samples x (N, C, H, W) or (N, H, W, C), or (N, H, W) for one channel;
labels y (N,) integers; optionally x_val, y_val (all key names configurable). The layout is
detected (`layout="auto"`) when only one reading is plausible, and otherwise must be given.
uint8 samples stay uint8, every other number type becomes float32. Samples are read straight
from the archive member in pieces (the .npy header gives shape and dtype, the rows follow), so
memory holds one piece; labels are read whole (they are small).
"""
import os
import zipfile

import numpy
from numpy.lib import format as npy

from .common import DAMAGED, check_labels, check_labels_fit, piece_samples, read_exact, write


LAYOUTS = ("auto", "nchw", "nhwc")
IMAGE_CHANNELS = (1, 3, 4)  # gray, RGB, RGBA


def convert(path, out, layout="auto", num_classes=None, x_key="x", y_key="y",
            x_val_key="x_val", y_val_key="y_val", **output):
    """Convert the .npz at `path`; layout of 4-d samples: "nchw", "nhwc" or "auto" (see
    detect_layout); num_classes defaults to the largest label + 1. output: DatasetWriter
    options. Returns the written paths."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        archive = zipfile.ZipFile(path)
    except DAMAGED as error:
        raise ValueError(f"{path}: not a readable .npz archive ({error})") from None
    with archive:
        stored = sorted(name[:-4] for name in archive.namelist() if name.endswith(".npy"))
        keys = {"train": (x_key, y_key)}
        if x_val_key in stored or y_val_key in stored:
            keys["val"] = (x_val_key, y_val_key)
        for key in sum(keys.values(), ()):
            if key not in stored:
                raise ValueError(f"{path} has no array {key!r} (it has {stored})")
        shape = _header(archive, path, x_key)[0]
        if layout == "auto" and len(shape) == 4:
            layout = detect_layout(shape, f"{path}:{x_key}")
        channels_last = layout == "nhwc"
        shapes, dtypes, labels = {}, {}, {}
        for split, (x, y) in keys.items():
            count, shapes[split], dtypes[split] = _samples_header(archive, path, x, channels_last)
            labels[split] = _labels(archive, path, y, count)
        if len(set(shapes.values())) > 1 or len(set(dtypes.values())) > 1:
            raise ValueError(f"{path}: {x_key} and {x_val_key} differ in sample shape or type: "
                             + ", ".join(f"{s} {shapes[s]} {dtypes[s].__name__}" for s in keys))
        if num_classes is None:
            num_classes = 1 + max(int(y.max()) for y in labels.values())
        splits = {}
        for split, (x, y) in keys.items():
            y_checked = check_labels(labels[split], num_classes, f"{path}:{y}")
            splits[split] = (len(y_checked), _blocks(archive, path, x, y_checked, channels_last,
                                                     dtypes[split]))
        read_as = " read as (N, H, W, C)" if channels_last and len(shape) == 4 else ""
        return write(out, num_classes, shapes["train"], dtypes["train"], splits,
                     f"npz arrays from {path}{read_as}", **output)


def detect_layout(shape, where):
    """"nchw" or "nhwc" for samples of `shape` (N, a, b, c): a reading is plausible when its
    channel axis holds 1, 3 or 4 channels or is smaller than both image sides. Exactly one
    plausible reading is taken; none or both is a ValueError asking for the layout."""
    def plausible(channels, sides):
        return channels in IMAGE_CHANNELS or channels < min(sides)
    readings = [name for name, channels, sides in (("nchw", shape[1], shape[2:]),
                                                   ("nhwc", shape[3], shape[1:3]))
                if plausible(channels, sides)]
    if len(readings) == 1:
        return readings[0]
    raise ValueError(f"{where} has shape {tuple(shape)}: cannot tell (N, C, H, W) from "
                     "(N, H, W, C); give the layout: --layout nchw or --layout nhwc")


def _header(archive, path, key):
    """(shape, fortran_order, dtype) of an array in the archive, from its .npy header alone."""
    with archive.open(f"{key}.npy") as f:
        return _read_header(f, f"{path}:{key}")


def _read_header(f, where):
    """(shape, fortran_order, dtype) from the .npy header at the start of f."""
    try:
        version = npy.read_magic(f)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran_order, dtype = read(f)
    except (ValueError,) + DAMAGED as error:
        raise ValueError(f"{where}: not a readable .npy array ({error})") from None
    if dtype.kind not in "biuf":
        raise ValueError(f"{where}: holds {dtype} values; need numbers")
    return shape, fortran_order, dtype


def _samples_header(archive, path, key, channels_last):
    """(count N, sample shape (C, H, W), stored dtype) of the samples array `key`."""
    shape, _, dtype = _header(archive, path, key)
    if len(shape) not in (3, 4) or 0 in shape:
        raise ValueError(f"{path}:{key} has shape {shape}; samples must be (N, C, H, W), "
                         "(N, H, W, C) or (N, H, W), with no empty axis")
    if len(shape) == 3:
        sample = (1,) + shape[1:]
    else:
        sample = (shape[3],) + shape[1:3] if channels_last else shape[1:]
    return shape[0], sample, numpy.uint8 if dtype == numpy.uint8 else numpy.float32


def _labels(archive, path, key, count):
    """The labels array `key`, checked to hold one label per sample, and to fit in memory
    before it is read (a few MB of zip can declare gigabytes of zeros)."""
    shape, _, dtype = _header(archive, path, key)
    if shape != (count,):
        raise ValueError(f"{path}:{key} has shape {shape}; expected ({count},), one label per "
                         "sample")
    check_labels_fit(count, dtype.itemsize, f"{path}:{key}")
    return numpy.concatenate(list(_rows(archive, path, key)))


def _rows(archive, path, key):
    """The array `key` in pieces along its first axis."""
    where = f"{path}:{key}"
    with archive.open(f"{key}.npy") as f:
        shape, fortran_order, dtype = _read_header(f, where)
        row_bytes = dtype.itemsize * int(numpy.prod(shape[1:]))
        if fortran_order:  # the first axis varies fastest: no rows are contiguous, read it whole
            data = read_exact(f, row_bytes * shape[0], where)
            yield numpy.frombuffer(data, dtype).reshape(shape, order="F")
            return
        step = piece_samples(row_bytes)
        for start in range(0, shape[0], step):
            n = min(step, shape[0] - start)
            yield numpy.frombuffer(read_exact(f, n * row_bytes, where), dtype).reshape(
                (n,) + shape[1:])


def _blocks(archive, path, key, labels, channels_last, dtype):
    """(x (n, C, H, W) of `dtype`, y) pieces of the samples array `key`."""
    start = 0
    for x in _rows(archive, path, key):
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2) if channels_last else x
        yield x.astype(dtype, copy=False), labels[start:start + len(x)]
        start += len(x)
