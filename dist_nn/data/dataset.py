"""Reading one split of the HDF5 layout (see writer.py) from one file or many shard files.

Opening checks everything that can be checked without reading the samples (checks.py: what
each file declares, before anything is allocated), that all shards agree on sample shape,
dtype and attributes, and that the labels lie in [0, num_classes). `check_finite(begin, end)`
scans float samples for NaN/Inf chunk by chunk. A read that fails during the run (a chunk
failing its Fletcher-32 checksum, a damaged compressed chunk) is a DataReadError naming the
file. Reads gather sorted indices in contiguous
runs, or whole chunks when a batch needs many samples of a chunk: h5py's per-element
("fancy") selections are slow.
"""
import glob
import os
import stat

import h5py
import numpy

from .checks import DataError, DataReadError, check_split


def shard_files(path):
    """The files behind a path: the file itself, or the sorted matches of a glob."""
    path = os.fspath(path)
    if glob.has_magic(path):
        files = sorted(glob.glob(path))
        if not files:
            raise DataError(f"no files match {path!r}")
        return files
    if not os.path.exists(path):
        raise DataError(f"data file {path!r} does not exist")
    return [path]


def _open(file):
    try:
        mode = os.stat(file).st_mode
    except OSError as error:
        raise DataError(f"cannot read {file}: {error.strerror}") from None
    if not stat.S_ISREG(mode):  # a FIFO would block open() forever, a device never ends
        raise DataError(f"{file} is not a regular file (a directory, FIFO or device): data "
                        "files are HDF5 files")
    try:
        return h5py.File(file, "r")
    except OSError as error:
        raise DataError(f"cannot read {file}: it is truncated, damaged or not HDF5 "
                        f"(h5py: {error})") from None


class HDF5Split:
    """One split ("train" or "val") across shard files: len(), labels, read(indices)."""

    def __init__(self, path, split="train"):
        self.split = split
        self.files = shard_files(path)
        self.handles = [_open(f) for f in self.files]
        try:
            self._check_layout()
        except BaseException:
            self.close()
            raise
        self.xs = [h[f"{split}/x"] for h in self.handles]
        lengths = [len(x) for x in self.xs]
        self.starts = numpy.cumsum([0] + lengths)  # global index of each shard's first sample
        first = self.handles[0]
        self.sample_shape, self.dtype = self.xs[0].shape[1:], self.xs[0].dtype
        self.num_classes = int(first.attrs["num_classes"])
        self.mean = numpy.asarray(first.attrs["mean"], dtype=numpy.float64)
        self.std = numpy.asarray(first.attrs["std"], dtype=numpy.float64)
        self.source = str(first.attrs.get("source", ""))
        names = first.attrs.get("class_names")  # optional: label -> name, in label order
        self.class_names = None if names is None else [str(n) for n in names]
        self.labels = numpy.concatenate([self._load(k, h[f"{split}/y"], slice(None))
                                         for k, h in enumerate(self.handles)])
        self._check_labels()
        self.cache, self.shared = None, False

    def _check_layout(self):
        signatures = [check_split(f, h, self.split) for f, h in zip(self.files, self.handles)]
        if len(set(signatures)) > 1:
            detail = "; ".join(f"{f}: sample shape {s[0]}, {s[1]}, {s[2]} classes"
                               for f, s in zip(self.files, signatures))
            raise DataError(f"shards differ in sample shape, dtype or classes: {detail}")

    def _check_labels(self):
        bad = numpy.flatnonzero((self.labels < 0) | (self.labels >= self.num_classes))
        if len(bad):
            shard = int(numpy.searchsorted(self.starts, bad[0], side="right") - 1)
            raise DataError(f"{self.files[shard]}: {len(bad)} {self.split} labels outside "
                            f"[0, {self.num_classes}), the first at sample {bad[0]} "
                            f"(label {self.labels[bad[0]]})")

    def __len__(self):
        return int(self.starts[-1])

    def check_finite(self, begin=0, end=None):
        """DataError if float samples [begin, end) hold NaN or Inf (read chunk by chunk)."""
        if self.dtype.kind != "f":
            return
        end = len(self) if end is None else end
        step = self.xs[0].chunks[0] if self.xs[0].chunks else 1024
        for start in range(begin, end, step):
            block = self.read(numpy.arange(start, min(end, start + step)))
            bad = ~numpy.isfinite(block.reshape(len(block), -1)).all(axis=1)
            if bad.any():
                where = start + int(numpy.flatnonzero(bad)[0])
                shard = int(numpy.searchsorted(self.starts, where, side="right") - 1)
                raise DataError(f"{self.files[shard]}: {self.split} sample {where} contains "
                                "NaN or Inf")

    def chunks(self):
        """[(start, end)]: the global index range of each storage chunk (along the samples)
        of every shard, in order; a contiguous shard counts as one chunk."""
        ranges = []
        for k, x in enumerate(self.xs):
            step = x.chunks[0] if x.chunks else max(1, len(x))
            ranges += [(int(self.starts[k]) + s, int(self.starts[k]) + min(s + step, len(x)))
                       for s in range(0, len(x), step)]
        return ranges

    def read_range(self, start, end):
        """Samples [start, end) of one shard, from the file (a chunk read whole)."""
        k = int(numpy.searchsorted(self.starts, start, side="right") - 1)
        base = int(self.starts[k])
        return self._load(k, self.xs[k], slice(start - base, end - base))

    @property
    def sample_bytes(self):
        return self.dtype.itemsize * int(numpy.prod(self.sample_shape))

    @property
    def nbytes(self):
        """The bytes of the split's samples in memory."""
        return len(self) * self.sample_bytes

    def load_into_memory(self, budget_bytes, comm=None):
        """Keep the whole split in memory when it fits `budget_bytes` per node; True if it
        did. With a communicator (collective) the ranks of a node share one copy
        (`comm.node_shared`), each reading its share of the chunks, every read verified by
        its checksum; where they cannot share memory (`shared` stays False) each rank keeps
        its own copy, if the node's copies together fit the budget. A read that fails on any
        rank is a DataReadError on all of them."""
        from ..distributed import LocalCommunicator, raise_together
        comm = comm or LocalCommunicator()
        if self.nbytes > budget_bytes:
            return False
        block = comm.node_shared(self.nbytes)
        self.shared = block is not None and block.size > 1
        if block is None:
            if self.nbytes * comm.local_size > budget_bytes:
                return False
            block = LocalCommunicator().node_shared(self.nbytes)
        cache = block.array.view(self.dtype).reshape((len(self),) + tuple(self.sample_shape))
        error = None
        try:
            for start, end in self.chunks()[block.rank::block.size]:
                cache[start:end] = self.read_range(start, end)
        except DataReadError as failure:
            error = failure
        raise_together(comm, error, DataReadError)
        block.sync()
        self.cache, self._shared_block = cache, block  # the block keeps the memory mapped
        return True

    def _load(self, shard, dataset, where):
        """dataset[where]; a read that fails is a DataReadError naming the file."""
        try:
            return dataset[where]
        except (OSError, RuntimeError, ValueError) as error:
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DataReadError(f"{self.files[shard]}: cannot read {dataset.name}: a chunk "
                                f"fails its checksum or is damaged ({detail})") from None

    def read(self, indices):
        """Samples at `indices` (any order, repeats allowed), in their stored dtype."""
        indices = numpy.asarray(indices, dtype=numpy.int64)
        if self.cache is not None:
            return self.cache[indices]
        order = numpy.argsort(indices, kind="stable")
        wanted = indices[order]
        out = numpy.empty((len(indices),) + self.sample_shape, dtype=self.dtype)
        position = 0
        for k, x in enumerate(self.xs):  # shard by shard
            stop = int(numpy.searchsorted(wanted, self.starts[k + 1]))
            local = wanted[position:stop] - self.starts[k]
            self._read_sorted(k, x, local, out, order[position:stop])
            position = stop
        return out

    def _read_sorted(self, shard, x, local, out, slots):
        """out[slots] = x[local] for sorted local indices, by chunk or by contiguous run."""
        chunk = x.chunks[0] if x.chunks else len(x)
        i = 0
        while i < len(local):
            c0 = local[i] // chunk * chunk
            j = int(numpy.searchsorted(local, c0 + chunk))
            if j - i >= max(2, chunk // 8):  # many samples of this chunk: read it whole
                block = self._load(shard, x, slice(c0, min(c0 + chunk, len(x))))
                out[slots[i:j]] = block[local[i:j] - c0]
                i = j
                continue
            run_end = i + 1  # a run of consecutive (or repeated) indices
            while run_end < j and local[run_end] - local[run_end - 1] <= 1:
                run_end += 1
            block = self._load(shard, x, slice(local[i], local[run_end - 1] + 1))
            out[slots[i:run_end]] = block[local[i:run_end] - local[i]]
            i = run_end

    def close(self):
        for h in self.handles:
            h.close()


class Subset:
    """Some samples of a split, seen as a split of their own (e.g. a tiny subset to overfit)."""

    def __init__(self, split, indices):
        self.split, self.indices = split, numpy.asarray(indices)
        self.labels = split.labels[self.indices]
        for name in ("sample_shape", "dtype", "num_classes", "mean", "std", "class_names"):
            setattr(self, name, getattr(split, name))

    def __len__(self):
        return len(self.indices)

    def read(self, indices):
        return self.split.read(self.indices[numpy.asarray(indices)])

    def load_into_memory(self, budget_bytes, comm=None):
        return False


def open_split(path, split, comm, check_values=True):
    """Open and validate a split on every rank; any rank's DataError is raised on all of
    them. Each rank scans its share of float samples for NaN/Inf (check_values)."""
    from ..distributed import raise_together
    dataset, error = None, None
    try:
        dataset = HDF5Split(path, split)
        n = len(dataset)
        if n < comm.size:
            raise DataError(f"the {split} split of {path} has fewer samples ({n}) than there "
                            f"are ranks ({comm.size}): every rank needs at least one; use "
                            "fewer ranks")
        if check_values:
            dataset.check_finite(n * comm.rank // comm.size, n * (comm.rank + 1) // comm.size)
    except DataError as failure:
        error = failure
    try:
        raise_together(comm, error, DataError)
    except DataError:
        if dataset is not None:
            dataset.close()
        raise
    return dataset
