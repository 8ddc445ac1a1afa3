"""An alpha-beta model of data-parallel step time and efficiency from 1 to 1,024 GPUs, held
against the peers' published figures and against what this machine measures on 1, 2, 4 ranks.

    python bench/scaling_model.py [--compute-ms resnet50=40,...] [--nvlink-gbs 150]
        [--ib-gbits 200] [--gpus-per-node 8] [--nics-per-node 8] [--bucket-mb 25]
        [--check mlp,resnet20] [--calibration calibration.json] [--no-check]

The model. A message of n bytes costs alpha + n beta per hop. Ring allreduce on p ranks:
2 (p-1) alpha + 2 (p-1)/p n beta; reduce-scatter and allgather: half of it each. Across
nodes it is two-level (as NCCL's rings and trees run): a reduce-scatter inside the node
(NVLink), an allreduce of the node's 1/g slice between the m nodes (each GPU's slice over its
share of the node's NICs: ring, or a pipelined double binary tree with 2 log2(m) latency
steps and 2 (n/g) beta), an allgather inside the node; the faster of ring and tree is taken,
as NCCL does. Gradients go in buckets of `bucket_mb` (DDP's and GradSync's 25 MB), each a
collective of its own. A step is forward (1/3 of compute) + backward (2/3) + optimizer.
Without overlap the buckets' collectives follow backward. With overlap, bucket i is ready
when backward has produced its share of the bytes, and the collectives run one after the
other as they become ready; the step ends when both backward and the last collective are
done. ZeRO-1 reduce-scatters the buckets the same way (overlapped), updates 1/p of the
optimizer state, then allgathers the parameters (not overlapped, as dist_nn does it). The
optimizer step is memory-bound: Adam touches 7 values per parameter at `--hbm-gbs`.
Efficiency is weak scaling: step time on 1 GPU / step time on p GPUs, batch per GPU fixed.

What is not modelled: contention between the collectives and compute for the GPU's memory
and SMs, stragglers, the data pipeline, network congestion across racks, mixed precision
(fp32 gradients: 4 bytes per parameter). Compute times per GPU are inputs; the defaults are
assumptions stated in DEFAULT_MODELS.

The check on this machine: alpha and beta for MPI's shared memory at p = 2 and 4 ranks come
from `bench/allreduce.py --fit` (run here unless --calibration names its output); the
measured 1-rank step time of dist_nn, times max(1, p / cores) (ranks beyond the cores share
them), is the compute; predicted and measured step times of 2 and 4 ranks (overlapped,
without overlap, ZeRO-1) are printed side by side.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launch import mpirun  # noqa: E402

# name -> (parameters, images per GPU, compute ms per step on one GPU: an assumption)
DEFAULT_MODELS = {
    # CIFAR resnet20 (dist_nn's builder), batch 128: small kernels, launch-bound, ~10k img/s
    "resnet20": (269_722, 128, 12.0),
    # ImageNet ResNet-18 (dist_nn's builder at 224x224), batch 32: ~2.2x faster than ResNet-50
    "resnet18": (11_681_832, 32, 18.0),
    # ResNet-50 (torchvision's size), batch 32 (Goyal et al.'s), ~800 img/s (A100, TF32)
    "resnet50": (25_557_032, 32, 40.0),
}
GPUS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


@dataclass(frozen=True)
class Network:
    gpus_per_node: int = 8
    intra_gbs: float = 150.0      # NVLink bus bandwidth per GPU, GB/s
    intra_alpha_us: float = 5.0
    inter_gbits: float = 200.0    # one InfiniBand HDR link, Gb/s
    nics_per_node: int = 8        # DGX-A100-like: one NIC per GPU
    inter_alpha_us: float = 10.0
    hbm_gbs: float = 1500.0       # for the (memory-bound) optimizer step

    def _intra(self):
        return self.intra_alpha_us * 1e-6, 1 / (self.intra_gbs * 1e9)

    def _inter(self):
        per_gpu = self.inter_gbits / 8 * 1e9 * min(self.nics_per_node, self.gpus_per_node) \
            / self.gpus_per_node
        return self.inter_alpha_us * 1e-6, 1 / per_gpu

    def _split(self, p):
        g = min(p, self.gpus_per_node)
        return g, max(1, math.ceil(p / g))

    def reduce_scatter(self, n, p):
        """Two-level ring reduce-scatter (allgather costs the same)."""
        g, m = self._split(p)
        alpha, beta = self._intra()
        t = (g - 1) * alpha + (g - 1) / g * n * beta
        if m > 1:
            alpha, beta = self._inter()
            t += (m - 1) * alpha + (m - 1) / m * n / g * beta
        return t

    def allreduce(self, n, p):
        """(seconds, algorithm): the faster of the two-level ring and tree."""
        g, m = self._split(p)
        if m == 1:
            return 2 * self.reduce_scatter(n, p), "ring"
        alpha, beta = self._intra()
        inside = 2 * ((g - 1) * alpha + (g - 1) / g * n * beta)
        alpha, beta = self._inter()
        ring = 2 * (m - 1) * alpha + 2 * (m - 1) / m * n / g * beta
        tree = 2 * math.ceil(math.log2(m)) * alpha + 2 * n / g * beta
        return (inside + ring, "ring") if ring <= tree else (inside + tree, "tree")


@dataclass(frozen=True)
class LocalNetwork(Network):
    """One node's MPI over shared memory, alpha and beta calibrated per world size."""
    fits: tuple = ()  # ((p, alpha_s, beta_s_per_byte), ...)

    def _fit(self, p):
        for q, alpha, beta in self.fits:
            if q == p:
                return alpha, beta
        raise KeyError(f"no calibration for {p} ranks")

    def reduce_scatter(self, n, p):
        alpha, beta = self._fit(p)
        return (p - 1) * alpha + (p - 1) / p * n * beta

    def allreduce(self, n, p):
        return 2 * self.reduce_scatter(n, p), "ring"


def buckets(nbytes, bucket_bytes):
    full, rest = divmod(nbytes, bucket_bytes)
    return [bucket_bytes] * int(full) + ([rest] if rest else [])


def step_time(compute_s, nbytes, p, network, overlap=True, zero=False, bucket_mb=25.0,
              optimizer_s=None, backward_share=2 / 3):
    """Predicted seconds of one step on p GPUs (the allreduce algorithm used, for show)."""
    if optimizer_s is None:  # Adam: read p, g, m, v; write p, m, v
        optimizer_s = 7 * nbytes / (network.hbm_gbs * 1e9)
    if p == 1:
        return compute_s + optimizer_s, "-"
    parts = buckets(nbytes, bucket_mb * 2**20)
    if zero:
        costs = [network.reduce_scatter(b, p) for b in parts]
        algorithm = "rs+ag"
    else:
        costs, algorithms = zip(*(network.allreduce(b, p) for b in parts))
        algorithm = "/".join(sorted(set(algorithms)))
    forward = compute_s * (1 - backward_share)
    backward = compute_s * backward_share
    if overlap:
        done, produced = 0.0, 0.0
        for size, cost in zip(parts, costs):
            produced += size
            ready = forward + backward * produced / nbytes
            done = max(done, ready) + cost
        synced = max(forward + backward, done)
    else:
        synced = compute_s + sum(costs)
    if zero:
        return synced + optimizer_s / p + sum(network.reduce_scatter(b, p) for b in parts), \
            algorithm
    return synced + optimizer_s, algorithm


def efficiency(compute_s, nbytes, p, network, **options):
    return step_time(compute_s, nbytes, 1, network)[0] / \
        step_time(compute_s, nbytes, p, network, **options)[0]


def gpu_table(models, network, bucket_mb):
    print(f"Prediction, {network.gpus_per_node} GPUs per node: NVLink {network.intra_gbs:g} "
          f"GB/s, alpha {network.intra_alpha_us:g} us; across nodes {network.nics_per_node} x "
          f"{network.inter_gbits:g} Gb/s InfiniBand per node, alpha {network.inter_alpha_us:g} "
          f"us; {bucket_mb:g} MB buckets, fp32 gradients, Adam's step at {network.hbm_gbs:g} "
          "GB/s.\n")
    for name, (params, batch, compute_ms) in models.items():
        nbytes = 4 * params
        print(f"{name}: {nbytes / 2**20:.1f} MiB of gradients, {batch} images/GPU, compute "
              f"{compute_ms:g} ms/step")
        print("| GPUs | allreduce | step ms, no overlap | overlap | ZeRO-1 | efficiency, no "
              "overlap | overlap | ZeRO-1 |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for p in GPUS:
            runs = [step_time(compute_ms / 1e3, nbytes, p, network, overlap=o, zero=z,
                              bucket_mb=bucket_mb) for o, z in ((False, False), (True, False),
                                                                (True, True))]
            base = step_time(compute_ms / 1e3, nbytes, 1, network)[0]
            print(f"| {p} | {runs[0][1]} | " + " | ".join(f"{t * 1e3:.1f}" for t, _ in runs)
                  + " | " + " | ".join(f"{base / t:.0%}" for t, _ in runs) + " |")
        print()


# published figures: (who, setup, model parameters, images/GPU, assumed compute ms, network,
# (GPUs, published efficiency, from GPUs))
PEERS = [
    ("Goyal et al. 2017", "ResNet-50, 8 P100/node (NVLink), 50 Gb/s Ethernet per node",
     25_557_032, 32, 150.0,
     Network(8, 80.0, 10.0, 50.0, 1, 30.0), (256, 0.90, 8)),
    ("ChainerMN 2017", "ResNet-50, 4 P100/node (PCIe), InfiniBand FDR 56 Gb/s",
     25_557_032, 32, 150.0,
     Network(4, 10.0, 10.0, 56.0, 1, 5.0), (128, 0.90, 1)),
    ("Horovod 2018", "ResNet-101, 4 P100/node (PCIe), 25 Gb/s RoCE",
     44_549_160, 64, 490.0,
     Network(4, 10.0, 10.0, 25.0, 1, 10.0), (512, 0.90, 1)),
]


def peer_table(bucket_mb):
    print("Against the published figures (compute per step assumed from P100 fp32 throughput: "
          "ResNet-50 ~210 img/s, ResNet-101 ~130 img/s; efficiency from the smallest GPU count "
          "they measured)\n")
    print("| who | setup | GPUs | published | model, overlap | model, no overlap |")
    print("| --- | --- | --- | --- | --- | --- |")
    for who, setup, params, batch, compute_ms, network, (p, published, start) in PEERS:
        def eff(overlap):
            t = lambda q: step_time(compute_ms / 1e3, 4 * params, q, network,  # noqa: E731
                                    overlap=overlap, bucket_mb=bucket_mb)[0]
            return t(start) / t(p)
        print(f"| {who} | {setup}, {batch}/GPU | {p} (vs {start}) | ~{published:.0%} | "
              f"{eff(True):.0%} | {eff(False):.0%} |")
    print()


# --- the check on this machine --------------------------------------------------------------

def measure_worker(name, mode, steps, rounds, out):
    """Median step seconds of dist_nn on this launch's ranks (mode: overlap, serial, zero)."""
    from bench.scaling import build, rounds_of
    from dist_nn import nn, optim
    from dist_nn.distributed import GradSync, broadcast_state, setup, sharded

    comm = setup("auto", "cpu", threads=1)
    model, x, y = build(name, comm, sync_bn=False)
    broadcast_state(model, comm)
    nn.skip_input_grad(model)
    make = lambda params: optim.Adam(params, lr=1e-3)  # noqa: E731
    if mode == "zero":
        opt, sync = sharded(make, model, comm, average=False)
    else:
        opt = make(model.parameters())
        sync = GradSync(model, opt.flat, comm, overlap=mode == "overlap", average=False)
    loss = nn.SoftmaxCrossEntropy()

    def step():
        opt.zero_grad()
        loss.forward(model.forward(x), y, mean_over=len(x) * comm.size)
        model.backward(loss.backward())
        sync.wait()
        opt.step()
    seconds = statistics.median(1 / r for r in rounds_of(step, comm.barrier, steps, rounds))
    if comm.rank == 0:
        Path(out).write_text(json.dumps({"seconds": seconds, "bytes": sync.flat.data.nbytes}))


def measure(name, p, mode, steps, rounds):
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "step.json"
        done = mpirun.run(p, [sys.executable, __file__, "--worker", name, mode, str(steps),
                              str(rounds), str(out)], timeout=1800)
        if done.returncode:
            sys.exit(done.returncode)
        return json.loads(out.read_text())


def check(names, calibration, steps, rounds):
    """Predicted against measured step times on 1, 2, 4 ranks of this machine."""
    from bench.scaling import BENCHMARKS
    if calibration is None:
        calibration = Path(tempfile.mkdtemp()) / "calibration.json"
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "allreduce.py"),
                                      "--fit", str(calibration), "--ranks", "2,4"])
        if done.returncode:
            sys.exit(done.returncode)
    fits = json.loads(Path(calibration).read_text())
    network = LocalNetwork(fits=tuple((int(p), f["alpha_s"], f["beta_s_per_byte"])
                                      for p, f in fits.items()))
    cores = os.cpu_count()
    print(f"Check on this machine ({cores} cores; MPI alpha/beta from {calibration}: "
          + ", ".join(f"p={p}: {f['alpha_s'] * 1e6:.1f} us, {1e-9 / f['beta_s_per_byte']:.2f} "
                      "GB/s" for p, f in fits.items()) + ")\n")
    print("| model | ranks | mode | predicted ms | measured ms | measured / predicted |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        one = measure(name, 1, "serial", steps, rounds)
        compute, nbytes = one["seconds"], one["bytes"]
        print(f"| {name} ({BENCHMARKS[name][2]}/rank, {nbytes / 2**20:.1f} MiB) | 1 | - | "
              f"{compute * 1e3:.1f} | {compute * 1e3:.1f} | 1.00 |")
        for p in (2, 4):
            for mode in ("serial", "overlap", "zero"):
                predicted, _ = step_time(compute * max(1.0, p / cores), nbytes, p, network,
                                         overlap=mode != "serial", zero=mode == "zero",
                                         optimizer_s=0.0)
                seen = measure(name, p, mode, steps, rounds)["seconds"]
                print(f"| {name} | {p} | {mode} | {predicted * 1e3:.1f} | {seen * 1e3:.1f} | "
                      f"{seen / predicted:.2f} |", flush=True)
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compute-ms", default="", help="name=ms,...: compute per step on "
                        "one GPU (defaults: " + ", ".join(f"{k}={v[2]:g}" for k, v in
                                                          DEFAULT_MODELS.items()) + ")")
    defaults = Network()
    parser.add_argument("--gpus-per-node", type=int, default=defaults.gpus_per_node)
    parser.add_argument("--nvlink-gbs", type=float, default=defaults.intra_gbs)
    parser.add_argument("--nvlink-alpha-us", type=float, default=defaults.intra_alpha_us)
    parser.add_argument("--ib-gbits", type=float, default=defaults.inter_gbits)
    parser.add_argument("--nics-per-node", type=int, default=defaults.nics_per_node)
    parser.add_argument("--ib-alpha-us", type=float, default=defaults.inter_alpha_us)
    parser.add_argument("--bucket-mb", type=float, default=25.0)
    parser.add_argument("--check", default="mlp,resnet20", help="models of bench/scaling.py "
                        "measured on 1, 2, 4 ranks here")
    parser.add_argument("--no-check", action="store_true", help="only the predictions")
    parser.add_argument("--calibration", help="bench/allreduce.py --fit output to use")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, mode, steps, rounds, out = args.worker
        return measure_worker(name, mode, int(steps), int(rounds), out)
    models = dict(DEFAULT_MODELS)
    for item in filter(None, args.compute_ms.split(",")):
        name, ms = item.split("=")
        params, batch, _ = models[name]
        models[name] = (params, batch, float(ms))
    network = replace(defaults, gpus_per_node=args.gpus_per_node, intra_gbs=args.nvlink_gbs,
                      intra_alpha_us=args.nvlink_alpha_us, inter_gbits=args.ib_gbits,
                      nics_per_node=args.nics_per_node, inter_alpha_us=args.ib_alpha_us)
    gpu_table(models, network, args.bucket_mb)
    peer_table(args.bucket_mb)
    if not args.no_check:
        check(args.check.split(","), args.calibration, args.steps, args.rounds)


if __name__ == "__main__":
    main()
