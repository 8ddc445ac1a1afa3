"""Under mpiexec -n N: the communicator's operations (reduce-scatter and allgather over
lengths that the world size divides or not), start-up broadcast and fingerprint,
exact metrics over uneven shards, SyncBN statistics over uneven batches, and the overlap of
gradient allreduce with backward. Rank 0 writes what each check saw as JSON.

    mpiexec -n N python collectives.py OUT.json
"""
import json
import sys
from dataclasses import dataclass

import numpy as np

from dist_nn import backend, models, nn, optim
from dist_nn.distributed import (Communicator, GradSync, Totals, broadcast_state,
                                 chunk_bounds, communicator, fingerprint)


def communicator_ops(comm):
    r, n = comm.rank, comm.size
    summed = np.full(5, r + 1.0)
    comm.allreduce(summed)
    largest = np.array([float(r)])
    comm.allreduce(largest, op="max")
    pending = np.arange(4.0) * (r + 1)
    handle = comm.iallreduce(pending)
    handle.wait()
    root_value = np.full(3, 7.0 if r == n - 1 else -1.0)
    comm.bcast(root_value, root=n - 1)
    scattered, gathered = {}, {}
    for length in (4 * n, 4 * n + 1, n - 1):  # even chunks, one short, some empty
        begin, end = chunk_bounds(length, n)[r]
        mine = np.full(end - begin, -1.0)
        comm.reduce_scatter(np.arange(length) * (r + 1.0), mine)
        pending_mine = np.full(end - begin, -1.0)
        comm.ireduce_scatter(np.arange(length) * (r + 2.0), pending_mine).wait()
        scattered[length] = comm.allgather_obj((mine.tolist(), pending_mine.tolist()))
        everything = np.full(length, -1.0)
        comm.allgather(np.arange(begin, end) + 0.5, everything)
        pending_everything = np.full(length, -1.0)
        comm.iallgather(np.full(end - begin, r + 0.0), pending_everything).wait()
        gathered[length] = (everything.tolist(), pending_everything.tolist())
    return {"allreduce": summed.tolist(), "max": largest.tolist(), "iallreduce": pending.tolist(),
            "reduce_scatter": scattered, "allgather": comm.allgather_obj(gathered),
            "bcast": root_value.tolist(), "allreduce_obj": comm.allreduce_obj(r),
            "bcast_obj": comm.bcast_obj({"from": r}), "allgather_obj": comm.allgather_obj(r * r),
            "local": comm.allgather_obj((comm.local_rank, comm.local_size)),
            "protocol": isinstance(comm, Communicator)}


def startup(comm):
    backend.seed(comm.rank)  # deliberately different initial weights on every rank
    model = models.build("cnn", (3, 8, 8), 4, channels=(4,), hidden=6)
    model[1].running_mean[...] = comm.rank  # and different buffers
    broadcast_state(model, comm)
    state = model.state_dict()
    gathered = comm.allgather_obj(state)
    return {"identical_after_broadcast": all(
        all(np.array_equal(g[k], state[k]) for k in state) for g in gathered),
        "fingerprints": comm.allgather_obj(fingerprint(model, {"lr": 0.1}))}


@dataclass
class Seen(Totals):
    loss: float = 0.0
    correct: float = 0.0


def metrics(comm):
    """Rank r holds r + 1 samples of the global 1..T sequence (uneven shards)."""
    sizes = [r + 1 for r in range(comm.size)]
    begin = sum(sizes[:comm.rank])
    values = np.arange(begin, begin + sizes[comm.rank], dtype=float)
    totals = Seen(len(values), loss=float(values.sum()),
                  correct=float((values % 2 == 0).sum())).reduced(comm)
    everything = np.arange(sum(sizes), dtype=float)
    return {"reduced": {"loss": totals.mean("loss"), "correct": totals.mean("correct"),
                        "count": totals.samples}, "expected": {
        "loss": everything.mean(), "correct": float((everything % 2 == 0).mean()),
        "count": len(everything)}}


class CountingComm:
    """Forwards to a communicator and counts the collectives called."""

    def __init__(self, comm):
        self.comm, self.calls = comm, 0
        self.rank, self.size = comm.rank, comm.size

    def allreduce(self, buf, op="sum"):
        self.calls += 1
        self.comm.allreduce(buf, op)


def sync_bn(comm):
    """Rank r normalises r + 2 samples; the global batch statistics must be used."""
    sizes = [r + 2 for r in range(comm.size)]
    everything = np.random.default_rng(0).normal(3.0, 2.0, (sum(sizes), 3, 4, 4))
    begin = sum(sizes[:comm.rank])
    counting = CountingComm(comm)
    bn = nn.BatchNorm2d(3, comm=counting)
    y = bn.forward(everything[begin:begin + sizes[comm.rank]])
    mean = everything.mean(axis=(0, 2, 3))
    var = everything.var(axis=(0, 2, 3))
    expected = (everything - mean[:, None, None]) / np.sqrt(var[:, None, None] + bn.eps)
    forward_error = float(np.abs(y - expected[begin:begin + sizes[comm.rank]]).max())
    running = comm.allgather_obj((bn.running_mean.copy(), bn.running_var.copy()))
    bn.eval()
    calls = counting.calls
    bn.forward(everything[:2])
    bn.backward(np.ones((2, 3, 4, 4)))
    return {"forward_error": comm.allreduce_obj(forward_error, op="max"),
            "running_identical": all(np.array_equal(a, running[0][0]) and
                                     np.array_equal(b, running[0][1]) for a, b in running),
            "running_mean_error": float(np.abs(running[0][0] - 0.1 * mean).max()),
            "eval_calls": counting.calls - calls}


class RecordingComm:
    """Forwards to a communicator and records when each non-blocking allreduce starts, as
    the number of modules whose backward had finished by then."""

    def __init__(self, comm, progress):
        self.comm, self.progress, self.starts = comm, progress, []
        self.rank, self.size = comm.rank, comm.size

    def iallreduce(self, buf):
        self.starts.append(self.progress[0])
        return self.comm.iallreduce(buf)

    def allreduce(self, buf, op="sum"):
        self.comm.allreduce(buf, op)


def overlap(comm, enabled):
    """When each bucket's allreduce started, counted in finished module backwards."""
    backend.seed(0)
    model = models.build("mlp", (1, 8, 8), 10, hidden=(32, 32, 32))
    progress = [0]
    owners = [m for _, m in model.named_modules() if m.own_parameters()]
    count = lambda module: progress.__setitem__(0, progress[0] + 1)  # noqa: E731
    for m in owners:  # registered before GradSync's hooks: runs first
        m.add_backward_hook(count)
    recording = RecordingComm(comm, progress)
    opt = optim.SGD(model.parameters(), lr=0.1)
    sync = GradSync(model, opt.flat, recording, bucket_mb=0.004, overlap=enabled)
    loss = nn.SoftmaxCrossEntropy()
    rng = np.random.default_rng(comm.rank)
    loss.forward(model.forward(rng.standard_normal((4, 1, 8, 8))), rng.integers(0, 10, 4))
    model.backward(loss.backward())
    sync.wait()
    sync.close()
    gradients = comm.allgather_obj(opt.flat.grad.copy())
    return {"starts": recording.starts, "modules": len(owners), "buckets": len(sync.buckets),
            "gradients_identical": all(np.array_equal(g, gradients[0]) for g in gradients)}


def main(out):
    comm = communicator("mpi")
    with backend.using("cpu", "float64"):
        results = {"ops": communicator_ops(comm), "startup": startup(comm),
                   "metrics": metrics(comm), "sync_bn": sync_bn(comm), "overlap": overlap(comm, True),
                   "no_overlap": overlap(comm, False)}
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
