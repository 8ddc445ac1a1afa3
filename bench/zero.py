"""ZeRO-1: per-rank optimizer-state memory and step time, sharded vs unsharded, dist_nn
against PyTorch's ZeroRedundancyOptimizer (DDP over gloo) on the same model.

    python bench/zero.py [--model cnn] [--ranks 2,4] [--steps 10] [--rounds 3] [--repeats 2]

Each configuration runs under mpiexec with one BLAS thread per rank: Adam (no weight decay)
on bench/scaling.py's models, a fixed random batch per rank. dist_nn: GradSync (unsharded)
or ShardedGradSync + ShardedOptimizer (`optim.shard = true`), buckets overlapped with
backward, per-rank BatchNorm like DDP. PyTorch: the same model exported by to_torch_module,
in DistributedDataParallel, with torch.optim.Adam or ZeroRedundancyOptimizer(Adam). Memory is
the bytes of optimizer state tensors on rank 0 after the timed steps (dist_nn's sharded run
also keeps a working copy of its shard's parameters and gradient: reported apart), and the
peak of NumPy's allocations during one dist_nn optimizer step (its temporaries). Step
time: the median over all rounds of all launches (launches interleaved), in ms.
"""
import argparse
import datetime
import faulthandler
import json
import statistics
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scaling import BENCHMARKS, build, ddp_step, free_port, rounds_of  # noqa: E402
from launch import mpirun  # noqa: E402

ADAM = dict(lr=1e-3)
LIBRARIES = ("dist_nn", "dist_nn sharded", "torch", "torch ZeRO")


def ours(name, shard, steps, rounds):
    from dist_nn import nn, optim
    from dist_nn.distributed import GradSync, broadcast_state, setup, sharded

    comm = setup("auto", "cpu", threads=1)
    model, x, y = build(name, comm, sync_bn=False)
    broadcast_state(model, comm)
    nn.skip_input_grad(model)
    make = lambda params: optim.Adam(params, **ADAM)  # noqa: E731
    if shard:
        opt, sync = sharded(make, model, comm, average=False)
        inner, working = opt.optimizer, sync.shard.data.nbytes + sync.shard.grad.nbytes
    else:
        opt = make(model.parameters())
        sync = GradSync(model, opt.flat, comm, average=False)
        inner, working = opt, 0
    loss = nn.SoftmaxCrossEntropy()
    global_batch = len(x) * comm.size

    def step():
        opt.zero_grad()
        loss.forward(model.forward(x), y, mean_over=global_batch)
        model.backward(loss.backward())
        sync.wait()
        opt.step()
    times = [1 / r for r in rounds_of(step, comm.barrier, steps, rounds)]
    state = sum(v.nbytes for v in inner.buffers.values())
    tracemalloc.start()  # NumPy reports its allocations to it
    opt.step()
    transient = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return comm, {"times": times, "state": state, "working": working, "transient": transient}


def theirs(name, zero, port, steps, rounds):
    import torch
    import torch.distributed as torch_dist
    from torch.distributed.optim import ZeroRedundancyOptimizer

    from dist_nn.distributed import setup

    comm = setup("auto", "cpu", threads=1)
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                  rank=comm.rank, world_size=comm.size,
                                  timeout=datetime.timedelta(seconds=300))
    model, x, y = build(name, comm, sync_bn=False)
    if zero:
        adam = lambda twin: ZeroRedundancyOptimizer(  # noqa: E731
            twin.parameters(), optimizer_class=torch.optim.Adam, **ADAM)
    else:
        adam = lambda twin: torch.optim.Adam(twin.parameters(), **ADAM)  # noqa: E731
    step, opt = ddp_step(model, x, y, make_optimizer=adam)
    local = opt.optim if zero else opt
    times = [1 / r for r in rounds_of(step, torch_dist.barrier, steps, rounds)]
    state = sum(t.numel() * t.element_size() for s in local.state.values()
                for t in s.values() if torch.is_tensor(t) and t.numel() > 1)  # not `step`
    # DDP and ZeroRedundancyOptimizer go while the process group lives: destroyed after
    # it, rank 0's hung in their destructors
    del step, opt, local  # the twin lives in step
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    return comm, {"times": times, "state": state, "working": 0, "transient": None}


def worker(args):
    faulthandler.dump_traceback_later(1200, exit=True)  # a hung rank says where, and ends
    if args.library.startswith("torch"):
        comm, seen = theirs(args.model, args.library == "torch ZeRO", args.port, args.steps,
                            args.rounds)
    else:
        comm, seen = ours(args.model, args.library == "dist_nn sharded", args.steps,
                          args.rounds)
    if comm.rank == 0:
        Path(args.out).write_text(json.dumps(seen))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn", choices=sorted(BENCHMARKS))
    parser.add_argument("--ranks", default="2,4")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    ranks = [int(r) for r in args.ranks.split(",")]
    out = Path("/tmp") / f"zero-{free_port()}.json"
    seen = {(lib, n): {"times": []} for n in ranks for lib in LIBRARIES}
    for _ in range(args.repeats):
        for (library, n), values in seen.items():
            done = mpirun.run(n, [sys.executable, __file__, "--worker", "--library", library,
                                  "--model", args.model, "--port", str(free_port()),
                                  "--out", str(out), "--steps", str(args.steps),
                                  "--rounds", str(args.rounds)], timeout=1800)
            if done.returncode:
                sys.exit(done.returncode)
            result = json.loads(out.read_text())
            values.update({k: v for k, v in result.items() if k != "times"})
            values["times"] += result["times"]
    out.unlink(missing_ok=True)
    mb = lambda b: b / 2**20  # noqa: E731
    print(f"model {args.model} ({BENCHMARKS[args.model][2]} samples/rank), Adam, float32")
    print("| ranks | dist_nn state MiB/rank | sharded | ratio | sharded working copy MiB "
          "| step's temporaries MiB, unsharded | sharded | torch Adam state | torch ZeRO | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in ranks:
        ours_full, ours_shard = seen["dist_nn", n], seen["dist_nn sharded", n]
        torch_full, torch_zero = seen["torch", n], seen["torch ZeRO", n]
        print(f"| {n} | {mb(ours_full['state']):.2f} | {mb(ours_shard['state']):.2f} | "
              f"{ours_shard['state'] / ours_full['state']:.2f} | "
              f"{mb(ours_shard['working']):.2f} | {mb(ours_full['transient']):.2f} | "
              f"{mb(ours_shard['transient']):.2f} | {mb(torch_full['state']):.2f} | "
              f"{mb(torch_zero['state']):.2f} | {torch_zero['state'] / torch_full['state']:.2f} |")
    print()
    print("| ranks | " + " | ".join(f"{lib} ms/step" for lib in LIBRARIES)
          + " | sharded / unsharded | dist_nn sharded / torch ZeRO |")
    print("| --- | " + " | ".join("---" for _ in LIBRARIES) + " | --- | --- |")
    for n in ranks:
        ms = {lib: 1000 * statistics.median(seen[lib, n]["times"]) for lib in LIBRARIES}
        print(f"| {n} | " + " | ".join(f"{ms[lib]:.1f}" for lib in LIBRARIES)
              + f" | {ms['dist_nn sharded'] / ms['dist_nn']:.2f}"
              + f" | {ms['dist_nn sharded'] / ms['torch ZeRO']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
