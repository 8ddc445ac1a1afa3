"""Exact distributed totals: sums and counts are reduced, never means, so that shards of
different sizes (or padded shards whose padding is left out) weigh each sample once."""
from dataclasses import astuple, dataclass, fields

import numpy


@dataclass
class Totals:
    """Named running sums on one rank: a subclass declares them as float fields; `samples`
    counts the samples they cover. `reduced(comm)` totals them over all ranks in one
    allreduce of one small vector."""
    samples: float = 0.0

    def __iadd__(self, other):
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def reduced(self, comm):
        """These totals summed over all ranks, on every rank (a collective)."""
        vector = numpy.array(astuple(self), dtype=numpy.float64)
        comm.allreduce(vector)
        return type(self)(*vector.tolist())

    def mean(self, name):
        """A sum's mean per sample (NaN without samples)."""
        return getattr(self, name) / self.samples if self.samples else float("nan")
