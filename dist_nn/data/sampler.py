"""DistributedSampler: which global sample indices each rank reads, epoch by epoch.

Each epoch has one global order: a permutation seeded by seed + epoch (or 0..n-1 without
shuffling), made a multiple of the world size by dropping its tail (drop_last) or by padding
it with its own first indices. Rank r takes every size-th index starting at r, so every rank
has the same count, and the k-th batches of all ranks together are the k-th global batch.
Padded positions are marked, so that evaluation can leave them out.

Two shuffled orders (`order`), each a function of (seed, epoch) alone, so that N ranks see
the global batches one rank sees and a resume in mid-epoch continues the same order:
- "exact": a uniform permutation of the n samples.
- "chunks": a permutation of the storage chunks (`chunks`: the [start, end) index ranges the
  file compresses and checksums together), then the samples of each `window` consecutive
  chunks of it shuffled together (FFCV's quasi-random order, WebDataset's shard shuffle, a
  tf.data shuffle buffer): every chunk is read whole once per epoch. Samples of one chunk
  stay within one window of the epoch, so the order is less random than exact: a batch mixes
  samples of at most `window` (about two) windows' chunks.
"""
import numpy

ORDERS = ("exact", "chunks")


def chunk_order(chunks, window, rng):
    """A permutation of the indices covered by `chunks` [(start, end)]: the chunks in random
    order, the samples of each `window` consecutive ones shuffled together."""
    chosen = rng.permutation(len(chunks))
    order = []
    for first in range(0, len(chosen), window):
        members = numpy.concatenate([numpy.arange(*chunks[c]) for c in chosen[first:first +
                                                                                window]])
        order.append(rng.permutation(members))
    return numpy.concatenate(order) if order else numpy.zeros(0, numpy.int64)


class DistributedSampler:
    def __init__(self, n, rank=0, size=1, shuffle=True, seed=0, drop_last=False,
                 order="exact", chunks=None, window=8):
        if n < size:
            raise ValueError(f"fewer samples ({n}) than ranks ({size}): every rank needs at "
                             "least one sample; use fewer ranks or more data")
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} outside [0, {size})")
        self.n, self.rank, self.size = n, rank, size
        if order not in ORDERS or window < 1:
            raise ValueError(f"order must be one of {ORDERS} and window >= 1, got {order!r} "
                             f"and {window!r}")
        if order == "chunks" and sum(end - start for start, end in chunks or ()) != n:
            raise ValueError(f"the chunks must cover the {n} samples")
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.order, self.chunks, self.window = order, chunks, window
        self.num_samples = n // size if drop_last else -(-n // size)  # per rank
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def global_order(self):
        """The epoch's global index order, len = num_samples * size."""
        rng = numpy.random.default_rng(self.seed + self.epoch)
        if not self.shuffle:
            order = numpy.arange(self.n)
        elif self.order == "chunks":
            order = chunk_order(self.chunks, self.window, rng)
        else:
            order = rng.permutation(self.n)
        total = self.num_samples * self.size
        return order[:total] if self.drop_last else numpy.resize(order, total)

    def indices(self):
        """This rank's indices for the epoch, and a mask of the real (not padded) ones."""
        positions = numpy.arange(self.rank, self.num_samples * self.size, self.size)
        return self.global_order()[positions], positions < self.n

    def __len__(self):
        return self.num_samples
