"""GradSync's effective bus bandwidth against raw mpi4py Allreduce on the same bytes.

    python bench/allreduce.py [--ranks 2,4] [--sizes-mb 1,8,64] [--repeats 50]

For each world size the script starts itself under mpiexec. Per message size, rank 0 reports
the median time of (a) `comm.Allreduce(IN_PLACE, buf)` on one float32 buffer and (b) a
GradSync step over a model whose gradients total the same bytes (default 25 MB buckets,
started and completed by `wait()`), alternating: once as the trainer runs it (the loss is
each rank's share of the global mean, average=False) and once dividing by the world size
afterwards (average=True, one more pass over the gradients). Bus bandwidth is
bytes / time * 2 (n - 1) / n, the traffic a ring allreduce moves per rank.

    python bench/allreduce.py --fit calibration.json [--ranks 2,4]

calibrates the alpha-beta model that bench/scaling_model.py uses: per world size p, raw
Allreduce times over message sizes from 4 KiB to 16 MiB are fitted (least squares on
relative error) to the ring formula 2 (p - 1) alpha + 2 (p - 1) / p bytes beta; the
reduce-scatter + allgather pair (ZeRO-1) is timed on the same sizes and printed beside its
prediction from the same alpha and beta.
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

    from dist_nn import nn, optim
    from dist_nn.distributed import GradSync, MPICommunicator

    comm = MPICommunicator()  # first: it sets Open MPI's allreduce up before MPI starts
    MPI = comm.MPI
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


FIT_SIZES = [4 * 2**10 * 4**k for k in range(7)]  # 4 KiB .. 16 MiB


def ring_allreduce_s(nbytes, p, alpha, beta):
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes * beta


def fit_worker(repeats):
    """Rank 0 prints one JSON line: p, sizes, median allreduce and reduce-scatter+allgather
    times, and the fitted alpha (s) and beta (s/byte)."""
    import json

    import numpy as np

    from dist_nn.distributed import MPICommunicator, chunk_bounds

    comm = MPICommunicator()
    p = comm.size
    allreduce, pair = [], []
    for nbytes in FIT_SIZES:
        buf = np.ones(nbytes // 4, dtype=np.float32)
        begin, end = chunk_bounds(buf.size, p)[comm.rank]
        mine = np.empty(end - begin, dtype=np.float32)
        times = {"allreduce": [], "pair": []}
        for _ in range(repeats + 2):
            comm.barrier()
            start = time.perf_counter()
            comm.allreduce(buf)
            times["allreduce"].append(time.perf_counter() - start)
            comm.barrier()
            start = time.perf_counter()
            comm.reduce_scatter(buf, mine)
            comm.allgather(mine, buf)
            times["pair"].append(time.perf_counter() - start)
        allreduce.append(statistics.median(times["allreduce"][2:]))
        pair.append(statistics.median(times["pair"][2:]))
    # t = a + b n, weighted by 1/t: every size counts by its relative error
    n, t = np.array(FIT_SIZES, float), np.array(allreduce)
    (a, b), *_ = np.linalg.lstsq(np.stack([1 / t, n / t], axis=1), np.ones_like(t), rcond=None)
    alpha, beta = max(a, 0.0) / (2 * (p - 1)), b * p / (2 * (p - 1))
    if comm.rank == 0:
        print(json.dumps({"p": p, "sizes": FIT_SIZES, "allreduce_s": allreduce,
                          "reduce_scatter_allgather_s": pair, "alpha_s": alpha,
                          "beta_s_per_byte": beta}), flush=True)


def fit(path, ranks, repeats):
    """Calibrate alpha and beta for each world size; write them to `path` as JSON."""
    import json
    fits = {}
    for p in ranks:
        done = mpirun.run(p, [sys.executable, __file__, "--worker", "--fit", str(path),
                              "--repeats", str(repeats)], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{done.stdout}\n{done.stderr}")
        fits[p] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'ranks':>5} {'KiB':>6} {'allreduce ms':>12} {'ring model ms':>13} "
          f"{'reduce-scatter+allgather ms':>27}")
    for p, f in fits.items():
        for n, measured, pair in zip(f["sizes"], f["allreduce_s"],
                                     f["reduce_scatter_allgather_s"]):
            model = ring_allreduce_s(n, p, f["alpha_s"], f["beta_s_per_byte"])
            print(f"{p:5d} {n // 1024:6d} {measured * 1e3:12.3f} {model * 1e3:13.3f} "
                  f"{pair * 1e3:27.3f}")
        print(f"      p = {p}: alpha {f['alpha_s'] * 1e6:.2f} us, "
              f"1 / beta {1e-9 / f['beta_s_per_byte']:.2f} GB/s", flush=True)
    Path(path).write_text(json.dumps(fits, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="2,4")
    parser.add_argument("--sizes-mb", default="1,8,64")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--fit", metavar="JSON", help="calibrate alpha and beta instead; "
                                                       "write them to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes_mb.split(",")]
    if args.worker:
        return fit_worker(args.repeats) if args.fit else worker(sizes, args.repeats)
    if args.fit:
        return fit(args.fit, [int(r) for r in args.ranks.split(",")], args.repeats)
    print(f"{'ranks':>5} {'MiB':>9} {'buckets':>7} {'raw bus GB/s':>13} {'GradSync GB/s':>14} "
          f"{'ratio':>6} {'+average GB/s':>15} {'ratio':>6}", flush=True)
    for ranks in (int(r) for r in args.ranks.split(",")):
        done = mpirun.run(ranks, [sys.executable, __file__, "--worker", "--sizes-mb",
                                  args.sizes_mb, "--repeats", str(args.repeats)])
        if done.returncode:
            sys.exit(done.returncode)


if __name__ == "__main__":
    main()
