"""GradSync's effective bus bandwidth against raw mpi4py Allreduce on the same bytes.

    python bench/allreduce.py [--ranks 2,4] [--sizes-mb 1,8,64] [--repeats 50]

For each world size the script starts itself under mpiexec. Per message size, rank 0 reports
the median time of (a) `comm.Allreduce(IN_PLACE, buf)` on one float32 buffer and (b) a
GradSync step over a model whose gradients total the same bytes (default 25 MB buckets,
started and completed by `wait()`), alternating: once as the trainer runs it (the loss is
each rank's share of the global mean, average=False) and once dividing by the world size
afterwards (average=True, one more pass over the gradients). Bus bandwidth is
bytes / time * 2 (n - 1) / n, the traffic a ring allreduce moves per rank.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launch import mpirun  # noqa: E402


def worker(sizes_mb, repeats):
    import numpy as np
    from mpi4py import MPI

    from dist_nn import nn, optim
    from dist_nn.dist import GradSync, MPICommunicator

    comm = MPICommunicator()
    n = comm.size
    rows = []
    for size_mb in sizes_mb:
        count = int(size_mb * 2**20 / 4)
        raw = np.ones(count, dtype=np.float32)
        # gradients of 1 MiB linear layers adding up to the same bytes
        layers = [nn.Linear(2**16, 4, bias=False) for _ in range(max(1, count // 2**18))]
        model = nn.Sequential(*layers)
        opt = optim.SGD(model.parameters(), lr=0.1)
        syncs = {"summing": GradSync(model, opt.flat, comm, overlap=False, average=False),
                 "averaging": GradSync(model, opt.flat, comm, overlap=False)}
        timings = {"raw": [], "summing": [], "averaging": []}
        for _ in range(repeats + 2):  # the first two warm up
            comm.barrier()
            start = time.perf_counter()
            comm.comm.Allreduce(MPI.IN_PLACE, raw, op=MPI.SUM)
            timings["raw"].append(time.perf_counter() - start)
            for name, sync in syncs.items():
                comm.barrier()
                start = time.perf_counter()
                sync.wait()
                timings[name].append(time.perf_counter() - start)
        nbytes = opt.flat.size * 4
        bus = {k: nbytes / statistics.median(v[2:]) * 2 * (n - 1) / n / 1e9
               for k, v in timings.items()}
        rows.append((n, nbytes / 2**20, len(syncs["summing"].buckets), bus))
    if comm.rank == 0:
        for n, mb, buckets, bus in rows:
            print(f"{n:5d} {mb:9.1f} {buckets:7d} {bus['raw']:13.2f} {bus['summing']:14.2f} "
                  f"{bus['summing'] / bus['raw']:6.2f} {bus['averaging']:15.2f} "
                  f"{bus['averaging'] / bus['raw']:6.2f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="2,4")
    parser.add_argument("--sizes-mb", default="1,8,64")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes_mb.split(",")]
    if args.worker:
        return worker(sizes, args.repeats)
    print(f"{'ranks':>5} {'MiB':>9} {'buckets':>7} {'raw bus GB/s':>13} {'GradSync GB/s':>14} "
          f"{'ratio':>6} {'+average GB/s':>15} {'ratio':>6}", flush=True)
    for ranks in (int(r) for r in args.ranks.split(",")):
        done = mpirun.run(ranks, [sys.executable, __file__, "--worker", "--sizes-mb",
                                  args.sizes_mb, "--repeats", str(args.repeats)])
        if done.returncode:
            sys.exit(done.returncode)


if __name__ == "__main__":
    main()
