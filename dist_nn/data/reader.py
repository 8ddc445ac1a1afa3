"""Reading many batches at once, by storage chunk: what keeps a shuffled epoch at the disk's
pace when a split does not fit in memory.

HDF5 compresses and checksums a split chunk by chunk (about 1 MB each), and every read call
costs about as much as reading a small chunk whole: fetching a shuffled batch sample by
sample makes one call per sample (~3,000 samples/s here), while reading chunks whole runs at
the file's sequential rate (~300,000). `ChunkReader.read` gets the indices of several
batches at once (the loader's read-ahead) and serves each chunk's samples from one whole
read when enough of them are due, from reads of contiguous runs otherwise. Chunks read whole
are held, up to `hold_bytes` (least recently used first out), while their samples may still
come in this epoch: with `data.order = "chunks"` every chunk is read once per epoch.
"""
import collections

import numpy

WHOLE_FRACTION = 32  # read a chunk whole once 1/32 of its samples are due at once


class ChunkReader:
    def __init__(self, split, hold_bytes, always_whole=False):
        self.split, self.hold_bytes = split, hold_bytes
        self.chunks = split.chunks()
        self.starts = numpy.array([start for start, _ in self.chunks], dtype=numpy.int64)
        self.always_whole = always_whole
        self.held = collections.OrderedDict()  # chunk number -> its samples
        self.held_bytes = 0
        self.whole_reads = 0  # chunks read whole so far (for tests and benchmarks)

    def forget(self):
        """Drop the held chunks (at an epoch's start: each epoch reads the file again, so
        that bytes changed on disk are found as they would be without holding)."""
        self.held.clear()
        self.held_bytes = 0

    def _whole(self, c, due):
        """Chunk c's samples when it is held or worth reading whole for `due` samples."""
        block = self.held.get(c)
        if block is not None:
            self.held.move_to_end(c)
            return block
        start, end = self.chunks[c]
        if not (self.always_whole or due >= max(2, (end - start) // WHOLE_FRACTION)):
            return None
        block = self.split.read_range(start, end)
        self.whole_reads += 1
        self.held[c] = block
        self.held_bytes += block.nbytes
        while self.held_bytes > self.hold_bytes and len(self.held) > 1:
            self.held_bytes -= self.held.popitem(last=False)[1].nbytes
        return block

    def read(self, indices):
        """Samples at `indices` (any order, repeats allowed), in their stored dtype."""
        indices = numpy.asarray(indices, dtype=numpy.int64)
        out = numpy.empty((len(indices),) + tuple(self.split.sample_shape), self.split.dtype)
        chunk_of = numpy.searchsorted(self.starts, indices, side="right") - 1
        order = numpy.argsort(chunk_of, kind="stable")
        edges = numpy.flatnonzero(numpy.diff(chunk_of[order])) + 1
        scattered = []
        for positions in numpy.split(order, edges):
            if not len(positions):
                continue
            c = int(chunk_of[positions[0]])
            block = self._whole(c, len(positions))
            if block is None:
                scattered.append(positions)
            else:
                out[positions] = block[indices[positions] - self.chunks[c][0]]
        if scattered:  # a few samples of many chunks: contiguous runs (HDF5Split.read)
            positions = numpy.concatenate(scattered)
            out[positions] = self.split.read(indices[positions])
        return out
