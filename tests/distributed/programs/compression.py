"""Under mpiexec -n N: a few SGD steps (float64 master weights) with GradSync and a gradient
compression. Every rank records, per step, its local gradient before the sync (the flat
buffer) and the synchronised gradient after it; rank 0 writes them all, with PowerSGD's
initial Q, fp16's scale of each bucket at each step, the parameter shapes in flat order and
the bucket layout, for the test to replay with a reference implementation of its own.

    mpiexec -n N python compression.py OUT.npz COMPRESSION [--zero] [--nccl]
    mpiexec -n N python compression.py OUT.npz fp16 --overflow

--nccl: on GPUs, one per rank, through the NCCL communicator.

--overflow: every rank's gradient is 40000 (fp16 holds it; the sum of two does not): the
StepRecipe's verdict and whether the parameters moved, per rank.
"""
import sys

import numpy as np

from dist_nn import backend, distributed, models, nn, optim
from dist_nn.distributed import GradSync, broadcast_state, compression, sharded

STEPS = 4
PER_RANK = 4


def overflowed_step(comm, model, opt, sync, out):
    recipe = optim.StepRecipe(model, opt, squared_norm=sync.squared_grad_norm,
                              skip_overflow=True)
    before = backend.to_host(opt.flat.data).copy()
    opt.flat.grad[...] = 40000.0
    sync._start_ready(all_buckets=True)
    sync.wait()
    overflow = recipe.unscale()
    recipe.step()
    verdicts = comm.comm.gather((overflow, bool(np.array_equal(before, backend.to_host(opt.flat.data))),
                                 recipe.skipped), root=0)
    if comm.rank == 0:
        np.savez(out, verdicts=np.array(verdicts))


def main(out, name, zero=False, overflow=False, nccl=False):
    comm = distributed.setup("nccl" if nccl else "mpi", "gpu" if nccl else "cpu")
    backend.use(dtype="float64")
    backend.seed(0)
    model = models.build("cnn", (3, 8, 8), 5, channels=(8, 16), hidden=32, dropout=0.0,
                         comm=comm)
    broadcast_state(model, comm)
    compressor = compression.make(name, rank=2, seed=0)
    options = dict(bucket_mb=0.02, average=False, compression=compressor)  # several buckets
    if zero:
        opt, sync = sharded(lambda params: optim.SGD(params, lr=0.05, momentum=0.9), model,
                            comm, **options)
        flat = sync.flat
    else:
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sync, flat = GradSync(model, opt.flat, comm, **options), opt.flat
    if overflow:
        return overflowed_step(comm, model, opt, sync, out)
    initial_q = [backend.to_host(q).copy() for q in getattr(compressor, "q", [])]
    loss = nn.SoftmaxCrossEntropy()
    local, synced, scales = [], [], []
    for step in range(STEPS):
        rng = np.random.default_rng(step)
        x = backend.to_device(rng.standard_normal((PER_RANK * comm.size, 3, 8, 8)))
        y = backend.to_device(rng.integers(0, 5, PER_RANK * comm.size))
        mine = slice(comm.rank * PER_RANK, (comm.rank + 1) * PER_RANK)
        opt.zero_grad()
        sync.enabled = False  # the local gradient first: backward without the hooks' sync
        loss.forward(model.forward(x[mine]), y[mine], mean_over=PER_RANK * comm.size)
        model.backward(loss.backward())
        local.append(backend.to_host(flat.grad).copy())
        if getattr(compressor, "scales", None) is not None:  # fp16's, per bucket, this step
            scales.append(backend.to_host(compressor.scales).copy())
        sync.enabled = True
        sync._start_ready(all_buckets=True)  # now the buckets, as backward would start them
        sync.wait()
        synced.append(backend.to_host(sync.shard.grad if zero else flat.grad).copy())
        opt.step()
    gathered = comm.comm.gather((np.array(local), np.array(synced)), root=0)
    if comm.rank == 0:
        np.savez(out, local=np.array([g[0] for g in gathered]),
                 **{f"synced{r}": g[1] for r, g in enumerate(gathered)},  # ZeRO: shards
                 shapes=np.array([str(p.shape) for p in flat.params]),
                 buckets=np.array([(start, end) for start, end, _ in sync.buckets]),
                 scales=np.array(scales),
                 **{f"q{i}": q for i, q in enumerate(initial_q)})


if __name__ == "__main__":
    flags = sys.argv[3:]
    main(sys.argv[1], sys.argv[2], "--zero" in flags, "--overflow" in flags, "--nccl" in flags)
