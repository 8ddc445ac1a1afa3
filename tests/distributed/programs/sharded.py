"""Under mpiexec -n N: ZeRO-1 (sharded optimizer state) against one unsharded process with the
N-times-larger batch, step by step (float64), and resuming from sharded checkpoints on other
world sizes. Rank 0 writes what it saw as JSON.

    mpiexec -n N python sharded.py OUT.json CHECKPOINT_DIR [CASE ...]

A case is `optimizer:variant` (OPTIMIZERS x VARIANTS below); `resume:optimizer`: a chain of
runs of 5 steps, each resuming from the previous one's checkpoint with another world size or
sharding (CHAINS), against 20 uninterrupted steps of one process; `overlap:mlp`: when the
buckets' reduce-scatters start during backward; or `overflow:fp16`: an Inf in rank 0's shard
of the gradient only, under fp16 loss scaling.
"""
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

from dist_nn import backend, checkpoint, models, nn, optim
from dist_nn.distributed import (GradSync, LocalCommunicator, MPICommunicator,
                                 broadcast_state, communicator, sharded)
from tests.distributed.programs.equivalence import PER_RANK, micro_batch, rank_sizes

STEPS = 20
SHAPE = (1, 6, 6)
OPTIMIZERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd_l1": lambda p: optim.SGD(p, lr=0.1, momentum=0.5, weight_decay=1e-3, l1=1e-3),
    "adam": lambda p: optim.Adam(p, lr=0.01, weight_decay=1e-3),
    "adamw": lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "adagrad": lambda p: optim.Adagrad(p, lr=0.05, initial_accumulator_value=0.1),
    "rmsprop": lambda p: optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
    "adadelta": lambda p: optim.Adadelta(p, lr=1.0, weight_decay=1e-3),
}
# variant -> (micro-batches per step, uneven last steps, frozen first layer, lr schedule,
# clipping of the global gradient norm)
VARIANTS = {"even": (1, False, False, False, 0), "uneven": (1, True, False, False, 0),
            "accumulate": (2, False, False, False, 0), "frozen": (1, False, True, False, 0),
            "schedule": (1, False, False, True, 0), "clip": (1, False, False, False, 0.05)}
# world size -> [(ranks, sharded)] of the resume chain's runs
CHAINS = {2: [(2, True), (1, True), (2, False), (2, True)],
          4: [(4, True), (2, True), (3, False), (4, True)]}
GLOBAL_BATCH = 12  # divisible by every world size of the chains


class Run:
    """A model, its (sharded or plain) optimizer and sync, and an optional cosine schedule."""

    def __init__(self, comm, optimizer, shard, frozen=False, schedule=False, clip=0.0):
        backend.seed(0)
        self.comm = comm
        self.model = models.build("mlp", SHAPE, 5, hidden=(16, 12), batch_norm=True,
                                  comm=comm)
        if frozen:
            self.model[1].weight.requires_grad = False
        broadcast_state(self.model, comm)
        make = OPTIMIZERS[optimizer]
        if shard:
            self.opt, self.sync = sharded(make, self.model, comm, bucket_mb=0.002)
        else:
            self.opt = make(self.model.parameters())
            self.sync = GradSync(self.model, self.opt.flat, comm, bucket_mb=0.002)
        self.schedules = [optim.Warmup(self.opt, 3, 0.1, after=optim.CosineDecay(
            self.opt, STEPS - 3))] if schedule else []
        self.loss = nn.SoftmaxCrossEntropy()
        # the optimizer step, clipping the global norm (sharded: the shard's + an allreduce)
        self.recipe = optim.StepRecipe(self.model, self.opt, clip_grad_norm=clip,
                                       squared_norm=self.sync.squared_grad_norm)
        self.norms = []

    def step(self, step, sizes, micros=1):
        """One optimizer step on the global batch of `sizes` samples per rank."""
        total = sum(sizes)
        begin, end = ((0, total) if self.comm.size == 1 else
                      (sum(sizes[:self.comm.rank]), sum(sizes[:self.comm.rank + 1])))
        self.opt.zero_grad()
        for m in range(micros):
            x, y = micro_batch(step, m, total, SHAPE)
            with contextlib.nullcontext() if m == micros - 1 else self.sync.no_sync():
                self.loss.forward(self.model.forward(x[begin:end]), y[begin:end],
                                  mean_over=total * micros / self.comm.size)
                self.model.backward(self.loss.backward())
        self.sync.wait()
        self.norms.append(self.recipe.step())
        for schedule in self.schedules:
            schedule.step()

    def parameters(self):
        return np.concatenate([p.data.ravel() for _, p in self.model.named_parameters()])


def relative(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def state_error(state, reference):
    """Largest relative difference of two optimizer state_dicts (inf when they differ in
    anything but the buffers' values)."""
    if state["step"] != reference["step"] or set(state["buffers"]) != set(reference["buffers"]):
        return float("inf")
    errors = [relative(state["buffers"][k], v) for k, v in reference["buffers"].items()]
    return max(errors, default=0.0)


def equivalence(comm, optimizer, variant):
    micros, uneven, frozen, schedule, clip = VARIANTS[variant]

    def train(c, world, shard):
        run = Run(c, optimizer, shard, frozen, schedule, clip)
        history = []
        for step in range(STEPS):
            sizes = rank_sizes(world) if uneven and step >= STEPS - 2 else [PER_RANK] * world
            run.step(step, sizes, micros)
            history.append(run.parameters())
        return run, history

    run, ours = train(comm, comm.size, shard=True)
    state = run.opt.state_dict()
    finals = comm.allgather_obj(ours[-1])
    shard_values = comm.allgather_obj(sum(v.size for v in run.opt.buffers.values()))
    if comm.rank != 0:
        return None
    reference, theirs = train(LocalCommunicator(), comm.size, shard=False)
    return {"errors": [relative(a, b) for a, b in zip(ours, theirs)],
            "state_error": state_error(state, reference.opt.state_dict()),
            "ranks_identical": all(np.array_equal(f, finals[0]) for f in finals),
            "shard_values": shard_values,
            "unsharded_values": sum(v.size for v in reference.opt.buffers.values()),
            "lr": [run.opt.lr, reference.opt.lr],
            "norm_error": relative(np.array(run.norms), np.array(reference.norms)),
            "clipped": clip > 0 and sum(n > clip for n in reference.norms)}


class RecordingComm:
    """Forwards to a communicator and records when each reduce-scatter starts, as the number
    of modules whose backward had finished by then."""

    def __init__(self, comm, progress):
        self.comm, self.progress, self.starts = comm, progress, []
        self.rank, self.size = comm.rank, comm.size

    def ireduce_scatter(self, buf, out):
        self.starts.append(self.progress[0])
        return self.comm.ireduce_scatter(buf, out)

    def iallgather(self, chunk, buf):
        return self.comm.iallgather(chunk, buf)


def overlap(comm):
    """When each bucket's reduce-scatter started, counted in finished module backwards."""
    backend.seed(0)
    model = models.build("mlp", (1, 8, 8), 10, hidden=(32, 32, 32))
    progress = [0]
    owners = [m for _, m in model.named_modules() if m.own_parameters()]
    for m in owners:  # registered before the sync's hooks: runs first
        m.add_backward_hook(lambda module: progress.__setitem__(0, progress[0] + 1))
    recording = RecordingComm(comm, progress)
    opt, sync = sharded(lambda p: optim.SGD(p, lr=0.1), model, recording, bucket_mb=0.004)
    loss = nn.SoftmaxCrossEntropy()
    rng = np.random.default_rng(comm.rank)
    loss.forward(model.forward(rng.standard_normal((4, 1, 8, 8))), rng.integers(0, 10, 4))
    model.backward(loss.backward())
    sync.wait()
    opt.step()
    parameters = comm.allgather_obj(sync.flat.data.copy())
    return {"starts": recording.starts, "modules": len(owners), "buckets": len(sync.buckets),
            "parameters_identical": all(np.array_equal(p, parameters[0]) for p in parameters)}


def overflow(comm):
    """fp16 steps whose gradient is Inf in rank 0's shard only (steps 1 and 3 of 5): every
    rank must skip them (and halve its loss scale) although only rank 0 sees the Inf."""
    run = Run(comm, "adam", shard=True)
    run.recipe = optim.StepRecipe(run.model, run.opt, amp="fp16",
                                  squared_norm=run.sync.squared_grad_norm)
    local, agreed, scales, skipped = [], [], [], []
    for step in range(5):
        run.opt.zero_grad()
        x, y = micro_batch(step, 0, PER_RANK * comm.size, SHAPE)
        mine = slice(comm.rank * PER_RANK, (comm.rank + 1) * PER_RANK)
        with run.recipe.autocast():
            run.loss.forward(run.model.forward(x[mine]), y[mine])
            run.model.backward(run.recipe.scale(run.loss.backward()))
        run.sync.wait()
        if step in (1, 3) and comm.rank == 0:
            run.sync.shard.grad[-1] = np.inf
        local.append(bool(np.isfinite(run.sync.shard.grad).all()))
        before = run.parameters()
        agreed.append(not run.recipe.unscale())
        run.recipe.step()
        skipped.append(bool(np.array_equal(before, run.parameters())))
        scales.append(run.recipe.scaler.scale)
    return comm.allgather_obj({"local": local, "agreed": agreed, "scales": scales,
                               "skipped": skipped, "parameters": run.parameters().tolist()})


def sub_communicator(world, ranks):
    """A communicator of the first `ranks` ranks (None on the others)."""
    if ranks == 1:
        return LocalCommunicator() if world.rank == 0 else None
    part = world.comm.Split(0 if world.rank < ranks else world.MPI.UNDEFINED, world.rank)
    return MPICommunicator(comm=part) if world.rank < ranks else None


def resume_chain(world, optimizer, directory):
    """Runs of 5 steps along CHAINS[world size], each resuming from the previous checkpoint;
    the final parameters and full optimizer state against 20 steps of one process."""
    chain = CHAINS[world.size]
    per_run = STEPS // len(chain)
    previous = None
    for index, (ranks, shard) in enumerate(chain):
        comm = sub_communicator(world, ranks)
        if comm is not None:
            run = Run(comm, optimizer, shard, schedule=True)
            if previous is not None:
                model_state, optimizer_state, meta = checkpoint.read(previous)
                run.model.load_state_dict(model_state)
                run.opt.load_state_dict(optimizer_state)
                run.schedules[0].load_state_dict(meta["schedule"])
            for step in range(index * per_run, (index + 1) * per_run):
                run.step(step, [GLOBAL_BATCH // ranks] * ranks)
            state = run.opt.state_dict()  # every rank of the run takes part
            if comm.rank == 0:
                checkpoint.write(Path(directory) / f"run-{index}.h5", run.model.state_dict(),
                                 state, {"schedule": run.schedules[0].state_dict()})
        previous = Path(directory) / f"run-{index}.h5"
        world.barrier()
    if world.rank != 0:
        return None
    final, optimizer_state, _ = checkpoint.read(previous)
    reference = Run(LocalCommunicator(), optimizer, shard=False, schedule=True)
    for step in range(STEPS):
        reference.step(step, [GLOBAL_BATCH])
    return {"chain": chain, "parameter_error": max(
                relative(final[k], v) for k, v in reference.model.state_dict().items()),
            "state_error": state_error(optimizer_state, reference.opt.state_dict())}


def main(out, directory, cases):
    comm = communicator("mpi")
    results = {}
    for case in cases:
        kind, name = case.split(":")
        results[case] = (resume_chain(comm, name, directory) if kind == "resume" else
                         overlap(comm) if kind == "overlap" else
                         overflow(comm) if kind == "overflow" else equivalence(comm, kind, name))
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    with backend.using("cpu", "float64"):
        main(sys.argv[1], sys.argv[2], sys.argv[3:])
