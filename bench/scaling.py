"""Weak scaling of data-parallel training, 1 vs 2 ranks, dist_nn against PyTorch DDP (gloo).

    python bench/scaling.py [--models mlp,cnn] [--ranks 1,2] [--steps 20] [--rounds 3]
                            [--repeats 3]

Each configuration runs under mpiexec with one BLAS thread per rank, also on 1 rank (weak
scaling per core). A rank trains on a fixed random batch of the per-rank size (MLP 784-1024-1024-10: 128,
CNN conv32-bn-relu-pool-conv64-bn-relu-pool-fc256-dropout-fc10: 64) with SGD (momentum 0.9,
weight decay 5e-4 on weights). dist_nn: GradSync buckets overlapped with backward, the loss
as each rank's share of the global mean (no averaging pass), no input gradient; BatchNorm
synchronised across ranks (SyncBN, dist_nn's default) or per rank ("local BN", what DDP does:
PyTorch's SyncBatchNorm needs CUDA). PyTorch: the same model exported by to_torch_module,
wrapped in DistributedDataParallel over gloo. Every launch times `rounds` runs of `steps`
steps; the launches of all configurations are repeated `repeats` times, interleaved, and the
median over all rounds is reported, since timings on shared machines drift. Throughput is
global samples/s; efficiency is throughput(n) / (n * throughput(1)).
"""
import argparse
import json
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launch import mpirun  # noqa: E402

BENCHMARKS = {  # name -> (model, input shape, per-rank batch, options)
    "mlp": ("mlp", (1, 28, 28), 128, dict(hidden=(1024, 1024))),
    "cnn": ("cnn", (3, 32, 32), 64, dict(channels=(32, 64), hidden=256, dropout=0.5)),
    "resnet20": ("resnet20", (3, 32, 32), 32, {}),
}
SGD = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)


WARM_UP_STEPS = 3


def rounds_of(step, comm_barrier, steps, rounds):
    """steps/s of `rounds` timed runs of `steps` steps (after WARM_UP_STEPS)."""
    for _ in range(WARM_UP_STEPS):
        step()
    rates = []
    for _ in range(rounds):
        comm_barrier()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        comm_barrier()
        rates.append(steps / (time.perf_counter() - start))
    return rates


def build(name, comm, sync_bn):
    import numpy as np

    from dist_nn import backend, models
    model_name, shape, batch, options = BENCHMARKS[name]
    backend.seed(0)
    model = models.build(model_name, shape, 10, comm=comm if sync_bn else None, **options)
    rng = np.random.default_rng(comm.rank)
    x = rng.standard_normal((batch,) + shape).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)
    return model, x, y


def ours(name, sync_bn, steps, rounds):
    from dist_nn import nn, optim
    from dist_nn.distributed import GradSync, broadcast_state, setup

    comm = setup("auto", "cpu", threads=1)
    model, x, y = build(name, comm, sync_bn)
    broadcast_state(model, comm)
    nn.skip_input_grad(model)
    opt = optim.SGD(model.parameters(), **SGD)
    sync = GradSync(model, opt.flat, comm, average=False)
    loss = nn.SoftmaxCrossEntropy()
    global_batch = len(x) * comm.size

    def step():
        opt.zero_grad()
        loss.forward(model.forward(x), y, mean_over=global_batch)
        model.backward(loss.backward())
        sync.wait()
        opt.step()
    return comm, [r * global_batch for r in rounds_of(step, comm.barrier, steps, rounds)]


def ddp_step(model, x, y, make_optimizer=None, hook=None):
    """(one training step of the DDP twin of dist_nn's `model` on the batch (x, y), its
    optimizer): SGD as dist_nn's (weight decay on matrices only) unless `make_optimizer(twin)`
    makes another; `hook`: a DDP communication hook. Needs the process group started."""
    import torch

    from dist_nn.torch_interop import to_torch_module
    twin = torch.nn.parallel.DistributedDataParallel(to_torch_module(model))
    if hook is not None:
        twin.register_comm_hook(None, hook)
    if make_optimizer is None:
        decay = [p for p in twin.parameters() if p.ndim > 1]
        rest = [p for p in twin.parameters() if p.ndim <= 1]
        opt = torch.optim.SGD([{"params": decay}, {"params": rest, "weight_decay": 0.0}],
                              **SGD)
    else:
        opt = make_optimizer(twin)
    loss = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad()
        loss(twin(tx), ty).backward()
        opt.step()
    return step, opt


def theirs(name, port, steps, rounds):
    import torch
    import torch.distributed as torch_dist

    from dist_nn.distributed import setup

    comm = setup("auto", "cpu", threads=1)
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                  rank=comm.rank, world_size=comm.size)
    model, x, y = build(name, comm, sync_bn=False)
    step, _ = ddp_step(model, x, y)
    rates = [r * len(x) * comm.size for r in rounds_of(step, torch_dist.barrier, steps, rounds)]
    del step  # DDP (in its closure) goes while the process group lives: destroyed after it,
    torch_dist.barrier()  # gloo's threads can abort the process ("terminate called ...")
    torch_dist.destroy_process_group()
    return comm, rates


def worker(args):
    if args.library == "torch":
        comm, rate = theirs(args.model, args.port, args.steps, args.rounds)
    else:
        comm, rate = ours(args.model, args.library == "dist_nn", args.steps, args.rounds)
    if comm.rank == 0:
        Path(args.out).write_text(json.dumps(rate))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    ranks = [int(r) for r in args.ranks.split(",")]
    libraries = ("dist_nn", "dist_nn-localbn", "torch")
    print(f"{'model':5} {'ranks':>5} " + " ".join(f"{lib + ' samples/s':>24}" for lib in libraries)
          + f" {'ratio':>6} {'ratio localbn':>13}", flush=True)
    out = Path("/tmp") / f"scaling-{free_port()}.json"
    for name in args.models.split(","):
        configs = [(library, n) for n in ranks for library in libraries
                   if not (library == "dist_nn-localbn" and name == "mlp")]  # MLP: no BN
        seen = {config: [] for config in configs}
        for _ in range(args.repeats):
            for library, n in configs:
                done = mpirun.run(n, [sys.executable, __file__, "--worker", "--library", library,
                                      "--model", name, "--port", str(free_port()), "--out",
                                      str(out), "--steps", str(args.steps), "--rounds",
                                      str(args.rounds)])
                if done.returncode:
                    sys.exit(done.returncode)
                seen[library, n] += json.loads(out.read_text())
        rate = {config: statistics.median(values) for config, values in seen.items()}
        for n in ranks:
            cells = [f"{rate[lib, n]:24.1f}" if (lib, n) in rate else f"{'-':>24}"
                     for lib in libraries]
            local = rate.get(("dist_nn-localbn", n))
            print(f"{name:5} {n:5d} " + " ".join(cells)
                  + f" {rate['dist_nn', n] / rate['torch', n]:6.2f}"
                  + (f" {local / rate['torch', n]:13.2f}" if local else f" {'-':>13}"), flush=True)
        for library in libraries:
            if (library, 1) in rate:
                efficiency = ", ".join(f"{n} ranks {rate[library, n] / (n * rate[library, 1]):.0%}"
                                       for n in ranks[1:])
                print(f"      weak-scaling efficiency {library}: {efficiency}", flush=True)
    out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
