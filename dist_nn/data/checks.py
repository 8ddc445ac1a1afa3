"""The data validator: what a data file declares is checked before anything is allocated.

A file can lie: a 3 KB file may declare 10^7 samples of 3x1024x1024, a billion classes, a
NaN mean or a zero std, or point with a link into another file. Every check here reads only
metadata (shapes, chunk counts, attributes), and each failure is one DataError naming the
file.
"""
import h5py
import numpy

MAX_CLASSES = 1_000_000  # the classifier alone would hold num_classes x width weights
STD_MIN = float(numpy.finfo(numpy.float32).tiny)  # a smaller std divides to Inf in float32


class DataError(ValueError):
    """Bad data: a missing or damaged file, an inconsistent layout, bad labels or values."""


class DataReadError(DataError):
    """Samples that could not be read during the run (a chunk failing its checksum, a damaged
    compressed chunk): raised on the rank that read them only; the trainer ends the job."""


def check_split(file, h, split):
    """Check /<split>/x and /<split>/y of an open file `h` and the file's attributes; return
    (sample shape, dtype name, num_classes) for comparing shards."""
    for name in ("x", "y"):
        path = f"{split}/{name}"
        if path not in h:
            raise DataError(f"{file} has no /{path} dataset")
        _check_local(file, h, path)
    x, y = h[f"{split}/x"], h[f"{split}/y"]
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{file}: /{split}/x {x.shape} and /{split}/y {y.shape} must be "
                        "(N, C, H, W) and (N,) of the same length N")
    if min(x.shape[1:]) < 1:
        raise DataError(f"{file}: /{split}/x has empty samples {x.shape[1:]}")
    if x.dtype not in (numpy.uint8, numpy.float32) or y.dtype.kind not in "iu":
        raise DataError(f"{file}: samples must be uint8 or float32 and labels integers, "
                        f"got {x.dtype} and {y.dtype}")
    for dataset in (x, y):
        _check_stored(file, dataset)
    other = "val" if split == "train" else "train"
    if f"{other}/x" in h and h[f"{other}/x"].shape[1:] != x.shape[1:]:
        raise DataError(f"{file}: /val/x samples {h['val/x'].shape[1:]} differ from "
                        f"/train/x samples {h['train/x'].shape[1:]}")
    return x.shape[1:], str(x.dtype), check_attributes(file, h, x.shape[1])


def _check_local(file, h, path):
    """Only data inside this file: no external or soft links, no virtual datasets, no
    external raw storage (any readable file or device would become training data)."""
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        link = h.get("/".join(parts[:depth]), getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise DataError(f"{file}: /{path} is an external link to {link.filename}: data "
                            "files must hold their data themselves")
        if isinstance(link, h5py.SoftLink):
            raise DataError(f"{file}: /{path} is a soft link to {link.path}: data files must "
                            "hold their datasets under their own names")
    if h[path].is_virtual:
        raise DataError(f"{file}: /{path} is a virtual dataset (its data lies in other files)")
    if h[path].external:
        raise DataError(f"{file}: /{path} keeps its data in external files "
                        f"({h[path].external[0][0]!s:.100}, ...): data files must hold their "
                        "data themselves")


MAX_CHUNK_BYTES = 256 * 2**20  # a chunk is read (and decompressed) whole


def _check_stored(file, dataset):
    """The file stores every chunk (or all bytes) the dataset declares, in chunks that a
    read can hold: a chunk is decompressed whole, and a few KB of gzip expand to a GB."""
    if dataset.chunks is not None:
        expanded = int(numpy.prod(dataset.chunks, dtype=object)) * dataset.dtype.itemsize
        if expanded > MAX_CHUNK_BYTES:
            raise DataError(f"{file}: {dataset.name} has chunks of {dataset.chunks}, "
                            f"{expanded / 2**20:.0f} MiB each when read (at most "
                            f"{MAX_CHUNK_BYTES // 2**20} MiB): write it with smaller chunks "
                            "(python -m datasets writes them so)")
    if dataset.chunks is None:
        stored = dataset.id.get_storage_size()
        declared = dataset.size * dataset.dtype.itemsize
    else:
        stored = dataset.id.get_num_chunks()
        declared = int(numpy.prod([-(-n // c) for n, c in zip(dataset.shape, dataset.chunks)],
                                  dtype=object))
    if stored < declared:
        unit = "bytes" if dataset.chunks is None else "chunks"
        raise DataError(f"{file}: {dataset.name} declares {dataset.shape} but stores only "
                        f"{stored} of its {declared} {unit}: truncated or forged")


def check_attributes(file, h, channels):
    """num_classes, mean, std (and class_names, if present): present and plausible; returns
    num_classes."""
    missing = [a for a in ("num_classes", "mean", "std") if a not in h.attrs]
    if missing:
        raise DataError(f"{file} lacks the attributes {missing}")
    classes = numpy.asarray(h.attrs["num_classes"])
    if classes.ndim or classes.dtype.kind not in "iu" or not 1 <= classes <= MAX_CLASSES:
        raise DataError(f"{file}: num_classes must be an integer in [1, {MAX_CLASSES}], got "
                        f"{_show(classes)}")
    for name in ("mean", "std"):
        values = numpy.asarray(h.attrs[name])
        if values.shape != (channels,) or values.dtype.kind not in "iuf" or \
                not numpy.isfinite(values).all():
            raise DataError(f"{file}: {name} must hold {channels} finite numbers (one per "
                            f"channel), got {_show(values)}")
        if name == "std" and (values < STD_MIN).any():  # divided by, in float32
            raise DataError(f"{file}: std must be > 0 in every channel (at least float32's "
                            f"smallest normal number, {STD_MIN:.3g}), got {_show(values)}")
    if "class_names" in h.attrs:
        names = numpy.asarray(h.attrs["class_names"])
        if names.shape != (int(classes),) or names.dtype.kind not in "OSU":
            raise DataError(f"{file}: class_names must be {int(classes)} strings (one per "
                            f"class), got {_show(names)}")
    return int(classes)


def _show(values):
    text = numpy.array2string(numpy.asarray(values), threshold=6)
    return text if len(text) <= 80 else text[:77] + "..."
