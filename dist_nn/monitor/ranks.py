"""Who is slow: every rank's time per step over a log window, gathered for rank 0's training
record, and the straggler rule. A rank that computes more slowly than the others holds them
all up: they wait for its gradients in the allreduce, so their collective wait grows while its
compute does."""
import statistics

# the per-rank time split of a training record: its key, the Trainer's time it is taken from
RANK_TIMES = {"compute": "compute", "data_wait": "data_wait",
              "collective_wait": "allreduce_wait"}


def find_straggler(compute, threshold):
    """The rank whose compute per step is more than `threshold` (a fraction: 0.2 = 20%) above
    the median of all ranks' (the slowest, if several are), or None."""
    median = statistics.median(compute)
    slowest = max(range(len(compute)), key=compute.__getitem__)
    return slowest if median > 0 and compute[slowest] > (1 + threshold) * median else None


class RankTimes:
    """Rank 0's view of the ranks' times: `fields(rows)` turns the gathered rows (per rank,
    seconds per step of each of RANK_TIMES) into the record's fields, `news(fields)` gives the
    console line about a straggler once per occurrence: when a rank becomes the straggler
    (none was, or another rank was), not again while it stays one."""

    def __init__(self, threshold):
        self.threshold, self.said = threshold, None

    def fields(self, rows):
        ranks = {key: [round(row[i], 6) for row in rows] for i, key in enumerate(RANK_TIMES)}
        exposed = round(statistics.fmean(ranks["collective_wait"]), 6)
        return {"ranks": ranks, "exposed_comm_s": exposed,
                "straggler": find_straggler(ranks["compute"], self.threshold)}

    def news(self, fields):
        rank, said = fields["straggler"], self.said
        self.said = rank
        if rank is None or rank == said:
            return None
        ms = {key: 1000 * values[rank] for key, values in fields["ranks"].items()}
        median = 1000 * statistics.median(fields["ranks"]["compute"])
        return (f"straggler: rank {rank} computes {ms['compute']:.0f} ms per step, "
                f"{ms['compute'] / median:.1f}x the median of {median:.0f} ms (data wait "
                f"{ms['data_wait']:.0f} ms, collective wait {ms['collective_wait']:.0f} ms)")
