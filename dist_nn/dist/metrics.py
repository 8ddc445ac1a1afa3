"""Exact distributed metrics: sums and counts are reduced, never averages, so that shards of
different sizes (or padded shards whose padding is left out) weigh each sample once."""
import numpy


class Totals:
    """Running sums of named metrics and the number of samples they cover, on one rank."""

    def __init__(self, names=("loss", "correct")):
        self.names = tuple(names)
        self.sums = numpy.zeros(len(self.names) + 1)  # + the sample count

    def add(self, count, **sums):
        """Add `count` samples whose metric sums are given by name (e.g. loss=sum of losses)."""
        for name, value in sums.items():
            self.sums[self.names.index(name)] += float(value)
        self.sums[-1] += count

    def reduce(self, comm):
        """{name: mean over all ranks' samples, "count": total samples}, the same on every rank."""
        totals = self.sums.copy()
        comm.allreduce(totals)
        count = totals[-1]
        means = {name: totals[i] / count if count else float("nan")
                 for i, name in enumerate(self.names)}
        return {**means, "count": int(count)}
