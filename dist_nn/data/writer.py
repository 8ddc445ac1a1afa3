"""Writing the HDF5 data layout, validated as it is written.

Layout (docs/design.md §3.4), in one file or in shard files `name-00000-of-00008.h5` that
each hold a contiguous share of every split:

    /train/x  (N, C, H, W) uint8 or float32, chunked along N     /train/y  (N,) int64
    /val/x, /val/y                                                (optional)
    attrs: num_classes, mean (C,), std (C,) of /train/x in its stored units, source, and any
           extra attributes a converter adds (e.g. class_names)

Every dataset carries HDF5's Fletcher-32 chunk checksums, so bytes changed later are found
when read (dataset.py). Files are written under a temporary name and renamed when complete,
so a failed conversion never leaves a file that looks valid.
"""
import errno
import os
import shutil
from pathlib import Path

import h5py
import numpy
from tqdm import tqdm

from .checks import MAX_CLASSES, STD_MIN

SAMPLE_DTYPES = (numpy.uint8, numpy.float32)
FORMAT_VERSION = 2  # 2: Fletcher-32 checksums; caches of files we build carry it in their name
CHUNK_BYTES = 1 << 20  # default chunk: about 1 MiB of samples


def shard_paths(path, shards):
    """[path] for one shard, else name-00000-of-0000S.h5 beside it (path without .h5 too)."""
    path = Path(path)
    if shards == 1:
        return [path.with_suffix(".h5") if path.suffix != ".h5" else path]
    stem = path.name[:-3] if path.name.endswith(".h5") else path.name
    return [path.with_name(f"{stem}-{k:05d}-of-{shards:05d}.h5") for k in range(shards)]


def check_space(directory, payload):
    """Refuse, before writing, a file that cannot fit: HDF5 cannot close a file whose disk
    filled up under it (its final flush fails again, and the process crashes at exit)."""
    needed = payload + payload // 100 + (1 << 20)  # chunk index, checksums, metadata
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise OSError(errno.ENOSPC, f"{needed / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB "
                      "free", str(directory))


class DatasetWriter:
    """Write splits of known sizes sample-batch by sample-batch (memory stays at one batch).

        with DatasetWriter("cifar10.h5", 10, (3, 32, 32), numpy.uint8,
                           {"train": 50000, "val": 10000}, source="CIFAR-10") as w:
            w.append("train", x, y) ...
    """

    def __init__(self, path, num_classes, sample_shape, dtype, counts, source, shards=1,
                 chunk_samples=None, compression=None, progress=None, attrs=None):
        dtype = numpy.dtype(dtype)
        if dtype not in [numpy.dtype(d) for d in SAMPLE_DTYPES]:
            raise ValueError(f"samples must be uint8 or float32, got {dtype}")
        if "train" not in counts:
            raise ValueError(f"a 'train' split is required, got the splits {sorted(counts)}")
        empty = [split for split, n in counts.items() if n < 1]
        if empty:
            raise ValueError(f"splits must not be empty: {empty} (leave a split out instead)")
        if shards < 1 or shards > min(counts.values()):
            raise ValueError(f"shards must be between 1 and the smallest split size "
                             f"({min(counts.values())}), got {shards}")
        if not 1 <= num_classes <= MAX_CLASSES:  # what the trainer accepts (checks.py)
            raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
        self.num_classes, self.sample_shape, self.dtype = num_classes, tuple(sample_shape), dtype
        self.counts, self.source, self.attrs = dict(counts), source, dict(attrs or {})
        self.paths = shard_paths(path, shards)
        # unique per process: several writers (one per node) may build the same cache file
        self.temporary = [p.with_name(f"{p.name}.partial-{os.getpid()}") for p in self.paths]
        sample_bytes = dtype.itemsize * int(numpy.prod(self.sample_shape))
        chunk = chunk_samples or max(1, CHUNK_BYTES // sample_bytes)
        self.bounds = {split: [n * k // shards for k in range(shards + 1)]
                       for split, n in counts.items()}  # shard k holds [bounds[k], bounds[k+1])
        self.written = {split: 0 for split in counts}
        channels = self.sample_shape[0]
        self.sums = numpy.zeros((2, channels))  # per channel: sum x, sum x^2 of train
        for tmp in self.temporary:
            tmp.parent.mkdir(parents=True, exist_ok=True)
        if compression is None:
            check_space(self.temporary[0].parent, sum(counts.values()) * (sample_bytes + 8))
        self.files = [h5py.File(tmp, "w") for tmp in self.temporary]
        for k, f in enumerate(self.files):
            for split in counts:
                n = self.bounds[split][k + 1] - self.bounds[split][k]
                f.create_dataset(f"{split}/x", (n,) + self.sample_shape, dtype=dtype,
                                 chunks=(min(chunk, n),) + self.sample_shape,
                                 compression=compression, fletcher32=True)
                f.create_dataset(f"{split}/y", (n,), dtype=numpy.int64, fletcher32=True)
        total = sum(counts.values())
        # by default a bar for large files, and only on a terminal (tqdm's disable=None)
        quiet = not progress if progress is not None else (
            None if total * sample_bytes > (256 << 20) else True)
        self.bar = tqdm(total=total, unit="samples", desc=f"writing {self.paths[0].name}",
                        disable=quiet)

    def append(self, split, x, y):
        """Add the next samples of a split: x (n, *sample_shape), y (n,) labels."""
        if split not in self.counts:
            raise ValueError(f"unknown split {split!r}; this file has {sorted(self.counts)}")
        x, y = numpy.asarray(x), numpy.asarray(y)
        if x.shape[1:] != self.sample_shape or len(x) != len(y) or y.ndim != 1:
            raise ValueError(f"{split}: expected x (n, {', '.join(map(str, self.sample_shape))}) "
                             f"and y (n,), got {x.shape} and {y.shape}")
        if x.dtype != self.dtype:
            raise ValueError(f"{split}: samples are {x.dtype}, this file stores {self.dtype}")
        if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() >= self.num_classes)):
            raise ValueError(f"{split}: labels must be integers in [0, {self.num_classes}), got "
                             f"{y.dtype} in [{y.min() if len(y) else '-'}, "
                             f"{y.max() if len(y) else '-'}]")
        if x.dtype.kind == "f" and not numpy.isfinite(x).all():
            raise ValueError(f"{split}: samples contain NaN or Inf")
        start = self.written[split]
        if start + len(x) > self.counts[split]:
            raise ValueError(f"{split}: more than the declared {self.counts[split]} samples")
        bounds = self.bounds[split]
        for k, f in enumerate(self.files):  # the part of [start, start + n) in shard k
            lo, hi = max(start, bounds[k]), min(start + len(x), bounds[k + 1])
            if lo < hi:
                f[f"{split}/x"][lo - bounds[k]:hi - bounds[k]] = x[lo - start:hi - start]
                f[f"{split}/y"][lo - bounds[k]:hi - bounds[k]] = y[lo - start:hi - start]
        if split == "train":  # float64 sums without float64 copies of the batch
            values = x.reshape(len(x), len(self.sums[0]), -1)
            self.sums[0] += values.sum(axis=(0, 2), dtype=numpy.float64)
            self.sums[1] += numpy.einsum("ncp,ncp->c", values, values, dtype=numpy.float64)
        self.written[split] += len(x)
        self.bar.update(len(x))

    def close(self):
        """Check every split is complete, write the attributes, and publish the files."""
        short = {s: (self.written[s], n) for s, n in self.counts.items() if self.written[s] != n}
        if short:
            raise ValueError("incomplete splits (written, declared): " + ", ".join(
                f"{s} {w}/{n}" for s, (w, n) in short.items()))
        n = self.counts["train"] * int(numpy.prod(self.sample_shape[1:]))
        mean = self.sums[0] / n
        std = numpy.sqrt(numpy.maximum(self.sums[1] / n - mean * mean, 0.0))
        if (std < STD_MIN).any():  # the trainer divides by it: refused here, not there
            raise ValueError(f"the train samples are constant in channel "
                             f"{int(numpy.argmax(std < STD_MIN))} (std {std.min():g}): "
                             "nothing to learn from it, and nothing to normalise by")
        for f in self.files:
            f.attrs.update(self.attrs)
            f.attrs.update(num_classes=self.num_classes, mean=mean, std=std, source=self.source)
            f.close()
        for tmp, path in zip(self.temporary, self.paths):
            os.replace(tmp, path)
        self.bar.close()
        return self.paths

    def abandon(self):
        """Close and delete the partial files (after an error)."""
        for f in self.files:
            try:
                f.close()
            except (OSError, RuntimeError):  # a full disk fails the final flush: discarded
                pass
        for tmp in self.temporary:
            tmp.unlink(missing_ok=True)
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is not None:
            self.abandon()
            return
        try:
            self.close()
        except BaseException:
            self.abandon()
            raise
