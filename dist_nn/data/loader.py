"""The prefetching loader: this rank's batches, read in the background, prepared on the device.

A background thread reads the host batches of an epoch (indices from the sampler, samples from
the HDF5 split) into a bounded queue, so reading overlaps training and memory stays bounded:
it reads `read_ahead_mb` of batches at once, chunk by chunk (reader.py), half of it for the
batches and half for whole chunks held while their samples are still due. Iteration moves each batch to the device, converts it to the float dtype there
(uint8 travels as uint8), normalises it with the data set's per-channel mean and std, and
augments it with a key (seed, rank, epoch, batch) so every batch's augmentation is
reproducible, also after a resume in mid-epoch.
"""
import collections
import queue
import threading
import time

import numpy

from .. import backend
from .reader import ChunkReader

Batch = collections.namedtuple("Batch", "x y valid")  # valid: the first `valid` are real
_END = object()


class Loader:
    """Batches of `global_batch` samples over all ranks: the k-th global batch is positions
    [k G, (k + 1) G) of the sampler's epoch order, and this rank's share is the positions it
    holds (every size-th one), so shares differ by at most one sample when G is not a
    multiple of the world size. drop_last leaves out a last, incomplete global batch."""

    def __init__(self, split, sampler, global_batch, augmenter=None, seed=0, prefetch=2,
                 drop_last=False, cache_mb=0, read_ahead_mb=64, comm=None):
        if global_batch < sampler.size:
            raise ValueError(f"a global batch of {global_batch} cannot give each of "
                             f"{sampler.size} ranks a sample; use a larger batch")
        self.split, self.sampler, self.global_batch = split, sampler, global_batch
        self.augmenter, self.seed, self.prefetch, self.drop_last = augmenter, seed, prefetch, drop_last
        # one copy per node with `comm` (collective), else this process's
        self.cached = split.load_into_memory(cache_mb * 2**20, comm) if cache_mb else False
        self.read_ahead = read_ahead_mb * 2**20
        self.reader = split if self.cached or not hasattr(split, "chunks") else \
            self._chunk_reader(split, sampler)
        shape = (1, -1, 1, 1)
        self.mean = backend.to_device(split.mean.reshape(shape), dtype=backend.float_dtype)
        self.inv_std = backend.to_device(1.0 / numpy.maximum(split.std, 1e-12).reshape(shape),
                                         dtype=backend.float_dtype)

    def _chunk_reader(self, split, sampler):
        """A ChunkReader holding read_ahead / 2 of chunks; in chunk order at least those of
        two shuffle windows, so that each is read once per epoch."""
        hold = self.read_ahead // 2
        if sampler.order == "chunks":
            largest = max(end - start for start, end in split.chunks()) * split.sample_bytes
            hold = max(hold, (2 * sampler.window + 1) * largest)
        return ChunkReader(split, hold, always_whole=sampler.order == "chunks")

    def __len__(self):
        if self.drop_last:
            return self.sampler.n // self.global_batch
        return -(-len(self.sampler) * self.sampler.size // self.global_batch)

    def bounds(self):
        """Start of each of this rank's batches in its index list, and the end of the last."""
        rank, size = self.sampler.rank, self.sampler.size
        return [min(len(self.sampler), (k * self.global_batch - rank + size - 1) // size)
                for k in range(len(self) + 1)]

    def __iter__(self):
        return self.epoch_batches(self.sampler.epoch)

    def epoch_batches(self, epoch, first_batch=0):
        """The batches of `epoch` from batch number `first_batch` on."""
        self.sampler.set_epoch(epoch)
        indices, real = self.sampler.indices()
        if isinstance(self.reader, ChunkReader):
            self.reader.forget()
        bounds = self.bounds()
        spans = list(zip(bounds[first_batch:-1], bounds[first_batch + 1:]))
        pending = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def hand_over(item):
            """Queue item unless the consumer has stopped; False once it has."""
            while not stop.is_set():
                try:
                    pending.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    pass
            return False

        batch_bytes = -(-self.global_batch // self.sampler.size) * \
            getattr(self.split, "sample_bytes", 1)
        at_once = max(1, self.read_ahead // 2 // max(1, batch_bytes))

        upload = PinnedUpload(self.prefetch + 2) if backend.device == "gpu" else None

        def produce():
            try:
                for first in range(0, len(spans), at_once):
                    group = spans[first:first + at_once]
                    samples = self.reader.read(indices[group[0][0]:group[-1][1]])
                    for start, end in group:
                        x = samples[start - group[0][0]:end - group[0][0]]
                        y, ready = self.split.labels[indices[start:end]], None
                        if upload is not None:
                            (x, y), ready = upload(x, y)
                        if not hand_over((x, y, int(real[start:end].sum()), ready)):
                            return
                hand_over(_END)
            except BaseException as error:  # handed to the consumer, raised there
                hand_over(error)

        reader = threading.Thread(target=produce, name="data-reader", daemon=True)
        reader.start()
        try:
            for number in range(first_batch, first_batch + len(spans)):
                item = pending.get()
                if isinstance(item, BaseException):
                    raise item
                x, y, valid, ready = item
                if ready is not None:
                    backend.cupy.cuda.get_current_stream().wait_event(ready)
                yield Batch(self.prepare(x, (self.seed, self.sampler.rank, epoch, number), epoch),
                            backend.to_device(y), valid)
                if upload is not None:  # asked for the next batch: the work on this one is
                    upload.consumed()   # queued (its buffers are dropped only after this)
            if pending.get() is not _END:
                raise RuntimeError("data reader produced more batches than expected")
        finally:
            stop.set()
            reader.join()

    def prepare(self, x, key, epoch):
        """Host samples -> normalised (and augmented) float batch on the device."""
        x = backend.to_device(x).astype(backend.float_dtype)
        x -= self.mean
        x *= self.inv_std
        return self.augmenter(x, key, epoch) if self.augmenter is not None else x


class PinnedUpload:
    """On a GPU, the reader thread's half of a batch's trip to the device: the host arrays are
    copied into pinned buffers and uploaded on a stream of their own, so that the copy
    overlaps the step running meanwhile; the consumer's stream waits for the upload's event
    (no host sync). CuPy's memory pool may hand a device buffer the consumer has just dropped
    to the next upload, so the upload stream first waits for the consumer's work queued so
    far (`consumed`). A pinned buffer is refilled once the copy from it has finished."""

    def __init__(self, slots):
        cupy = backend.cupy
        self.device, self.stream = cupy.cuda.Device(), cupy.cuda.Stream(non_blocking=True)
        self.slots = [([], None)] * slots  # (pinned buffers, the event of the copy from them)
        self.turn = 0
        self.consumed_at = None  # the consumer's stream after its work on the last batches

    def __call__(self, *arrays):
        """(device copies of the host `arrays`, the event that completes their upload)."""
        import cupyx
        cupy = backend.cupy
        pinned, copied = self.slots[self.turn]
        while copied is not None and not copied.done:  # only this thread waits
            time.sleep(1e-4)
        if [(p.shape, p.dtype) for p in pinned] != [(a.shape, a.dtype) for a in arrays]:
            pinned = [cupyx.empty_pinned(a.shape, a.dtype) for a in arrays]
        with self.device, self.stream:
            out = [cupy.empty(a.shape, a.dtype) for a in arrays]
            consumed = self.consumed_at  # read after allocating: it covers the buffers' last use
            if consumed is not None:
                self.stream.wait_event(consumed)
            for host, array, device in zip(pinned, arrays, out):
                host[...] = array
                device.set(host, stream=self.stream)
            done = self.stream.record()
        self.slots[self.turn] = (pinned, done)
        self.turn = (self.turn + 1) % len(self.slots)
        return out, done

    def consumed(self):
        """The consumer takes the next batch: its work on the ones before is queued."""
        self.consumed_at = backend.cupy.cuda.get_current_stream().record()
