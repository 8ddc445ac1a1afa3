"""DistributedSampler: which global sample indices each rank reads, epoch by epoch.

Each epoch has one global order: a permutation seeded by seed + epoch (or 0..n-1 without
shuffling), made a multiple of the world size by dropping its tail (drop_last) or by padding
it with its own first indices. Rank r takes every size-th index starting at r, so every rank
has the same count, and the k-th batches of all ranks together are the k-th global batch.
Padded positions are marked, so that evaluation can leave them out.
"""
import numpy


class DistributedSampler:
    def __init__(self, n, rank=0, size=1, shuffle=True, seed=0, drop_last=False):
        if n < size:
            raise ValueError(f"fewer samples ({n}) than ranks ({size}): every rank needs at "
                             "least one sample; use fewer ranks or more data")
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} outside [0, {size})")
        self.n, self.rank, self.size = n, rank, size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.num_samples = n // size if drop_last else -(-n // size)  # per rank
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def global_order(self):
        """The epoch's global index order, len = num_samples * size."""
        order = (numpy.random.default_rng(self.seed + self.epoch).permutation(self.n)
                 if self.shuffle else numpy.arange(self.n))
        total = self.num_samples * self.size
        return order[:total] if self.drop_last else numpy.resize(order, total)

    def indices(self):
        """This rank's indices for the epoch, and a mask of the real (not padded) ones."""
        positions = numpy.arange(self.rank, self.num_samples * self.size, self.size)
        return self.global_order()[positions], positions < self.n

    def __len__(self):
        return self.num_samples
