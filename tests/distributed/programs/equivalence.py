"""Under mpiexec -n N: data-parallel training against one process with the N-times-larger
batch, step by step (float64, dropout off). Rank 0 also trains the single-process reference
(a plain LocalCommunicator run) and writes, per case, the relative parameter error after every
step and whether all ranks ended with identical parameters. --nccl: on GPUs, one per rank,
through the NCCL communicator (the reference on rank 0's GPU).

    mpiexec -n N python equivalence.py OUT.json [--nccl] [CASE ...]
"""
import contextlib
import json
import sys

import numpy as np

from dist_nn import backend, distributed, models, nn, optim
from dist_nn.distributed import GradSync, LocalCommunicator, broadcast_state

STEPS = 20
PER_RANK = 3  # samples per rank per micro-batch
CLIP_NORM = 0.3  # below the gradient norms of these models: every step clips
MODELS = {
    "mlp": ((1, 6, 6), dict(hidden=(16, 12), batch_norm=True)),
    "cnn": ((3, 8, 8), dict(channels=(4, 6), hidden=10, dropout=0.0)),
    "resnet20": ((3, 8, 8), {}),
}
# variant -> (micro-batches per step, SyncBN, uneven last steps, clip_grad_norm or 0)
VARIANTS = {"even": (1, True, False, 0), "uneven": (1, True, True, 0),
            "accumulate": (2, True, False, 0), "no_syncbn": (1, False, False, 0),
            "clip": (1, True, True, CLIP_NORM)}


def rank_sizes(size):
    """Samples of each rank in one micro-batch: equal, except in the last two steps of the
    uneven variant, where rank r has PER_RANK - r (at least 1)."""
    return [max(1, PER_RANK - r) for r in range(size)]


def micro_batch(step, micro, total, shape):
    rng = np.random.default_rng([step, micro])
    return rng.standard_normal((total,) + shape), rng.integers(0, 5, total)


def train(comm, model_name, variant, world):
    """Parameters (flat) after each step on this rank, and the gradient norms; `world` is
    the N whose global batches are reproduced (the reference process sees the union of the
    N ranks' shards)."""
    shape, options = MODELS[model_name]
    micros, sync_bn, uneven, clip = VARIANTS[variant]
    backend.seed(0)
    model = models.build(model_name, shape, 5, comm=comm if sync_bn else None, **options)
    broadcast_state(model, comm)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    sync = GradSync(model, opt.flat, comm, bucket_mb=0.02)  # several buckets
    loss = nn.SoftmaxCrossEntropy()
    history, norms = [], []
    for step in range(STEPS):
        sizes = (rank_sizes(world) if uneven and step >= STEPS - 2
                 else [PER_RANK] * world)
        total = sum(sizes)
        if comm.size == 1:
            begin, end = 0, total
        else:
            begin, end = sum(sizes[:comm.rank]), sum(sizes[:comm.rank + 1])
        opt.zero_grad()
        for m in range(micros):
            x, y = map(backend.to_device, micro_batch(step, m, total, shape))
            last = m == micros - 1
            with contextlib.nullcontext() if last else sync.no_sync():
                # the mean over all micro-batches of the step, over all ranks
                loss.forward(model.forward(x[begin:end]), y[begin:end],
                             mean_over=total * micros / comm.size)
                model.backward(loss.backward())
        sync.wait()
        norms.append(optim.clip_grad_norm(opt.flat, clip) if clip else optim.grad_norm(opt.flat))
        opt.step()
        history.append(backend.to_host(opt.flat.data).copy())
    return history, norms


def main(out, cases):
    nccl = cases[:1] == ["--nccl"]
    comm = distributed.setup("nccl" if nccl else "mpi", "gpu" if nccl else "cpu")
    backend.use(dtype="float64")
    cases = cases[nccl:]
    results = {}
    for case in cases:
        model_name, variant = case.split(":")
        ours, norms = train(comm, model_name, variant, comm.size)
        finals = comm.allgather_obj(ours[-1])
        if comm.rank == 0:
            reference, _ = train(LocalCommunicator(), model_name, variant, comm.size)
            errors = [float(np.abs(a - b).max() / np.abs(b).max())
                      for a, b in zip(ours, reference)]
            results[case] = {"errors": errors, "grad_norms": norms,
                             "communicator": type(comm).__name__, "device": backend.device,
                             "ranks_identical": all(np.array_equal(f, finals[0]) for f in finals)}
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
