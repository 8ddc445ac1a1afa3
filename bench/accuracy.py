"""What gradient compression and the chunk reading order cost in accuracy, against the
uncompressed exact-order run in the same benchmark; and the bytes compression saves.

    python bench/accuracy.py [--compare compression,order] [--seeds 8] [--epochs 20]
        [--sets digits,mnist1d]

Each data set (the embedded digits; MNIST-1D, made by the `mnist1d` package: 4,000 training
and 1,000 test sequences of 40 values) is written in the HDF5 layout in chunks of 32 samples
(so that the digits' 1,437 training samples make 45 chunks and the chunk order is not one
window). `python -m dist_nn.train` trains the MLP on 2 ranks with `--seeds` seeds for each
variant: `train.grad_compression` none (the reference), fp16, bf16, powersgd (rank 4); and
`data.order` chunks (window 4: 128 samples, a tenth of the digits) against exact. Printed:
the final validation accuracy (mean and range over the seeds), its difference to the
reference in points, and for compression the bytes one rank sends per step (from the
compressor's plan of the model's buckets). The issue's goals: within 0.5 pt for fp16/bf16
and the chunk order, 1.5 pt for PowerSGD; PowerSGD's bytes at least 10x fewer. Speed over
a network: bench/network.py; reading speed: bench/data.py.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dist_nn import models, optim  # noqa: E402
from dist_nn.distributed import GradSync, compression  # noqa: E402
from dist_nn.monitor import read_records  # noqa: E402
from launch import mpirun  # noqa: E402

HIDDEN = [256, 256]
SHAPES = {"digits": (1, 8, 8), "mnist1d": (1, 1, 40)}
CHUNK = 32  # samples per stored chunk
# what each comparison varies: {name: overrides}, the first the reference
VARIANTS = {"compression": {m: [f"train.grad_compression={m}"]
                            for m in ("none", "fp16", "bf16", "powersgd")},
            "order": {"exact": ["data.order=exact"],
                      "chunks": ["data.order=chunks", "data.shuffle_window=4"]}}


def digits_file(folder):
    from dist_nn.data import embedded
    return str(embedded.build(folder / "digits.h5", chunk_samples=CHUNK)[0])


def mnist1d_file(folder):
    """MNIST-1D (the package's default arguments) as a dist_nn HDF5 file."""
    import numpy
    from mnist1d.data import get_dataset_args, make_dataset
    data = make_dataset(get_dataset_args())
    npz = folder / "mnist1d.npz"
    numpy.savez(npz, x=data["x"].reshape(-1, 1, 1, 40).astype("float32"), y=data["y"],
                x_val=data["x_test"].reshape(-1, 1, 1, 40).astype("float32"),
                y_val=data["y_test"])
    out = folder / "mnist1d.h5"
    subprocess.run([sys.executable, "-m", "datasets", "npz", str(npz), "--out", str(out),
                    "--layout", "nchw", "--x-val-key", "x_val", "--y-val-key", "y_val",
                    "--chunk-samples", str(CHUNK)], cwd=ROOT, check=True, capture_output=True)
    return str(out)


def bytes_per_step(name, shape):
    """Bytes one rank sends in a step's gradient collectives (float32 training)."""
    model = models.build("mlp", shape, 10, hidden=HIDDEN)
    flat = optim.SGD(model.parameters(), lr=0.1).flat
    compressor = compression.make(name, rank=4)
    if compressor is None:
        return flat.grad.nbytes
    compressor.bind(GradSync._cut(flat, 25.0), flat)
    return compressor.bytes_sent()


def accuracy(data, overrides, seed, epochs, folder):
    run_dir = folder / f"{Path(data).stem}-{abs(hash(tuple(overrides)))}-{seed}"
    argv = [sys.executable, "-m", "dist_nn.train", f"data.path={data}", "model.name=mlp",
            f"model.hidden={HIDDEN}".replace(" ", ""), f"train.epochs={epochs}",
            f"train.seed={seed}", *overrides, f"log.run_dir={run_dir}", "log.plots=false",
            "log.tensorboard=off"]
    done = mpirun.run(2, argv, env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                      cwd=ROOT, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{overrides} on {data} failed ({done.returncode}):\n{done.stderr}")
    return [r for r in read_records(run_dir) if r["split"] == "val"][-1]["accuracy"] * 100


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", default="compression,order")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--sets", default="digits,mnist1d")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        print(f"MLP {HIDDEN}, 2 ranks, {args.epochs} epochs, {args.seeds} seeds, chunks of "
              f"{CHUNK} samples; val accuracy mean (min-max) in %, difference to the first "
              "variant in points")
        print(f"{'data':8} {'variant':12} {'accuracy':>22} {'vs first':>9} "
              f"{'bytes/step':>11} {'fewer':>6}")
        for name in args.sets.split(","):
            data = digits_file(folder) if name == "digits" else mnist1d_file(folder)
            for compare in args.compare.split(","):
                reference = None
                for variant, overrides in VARIANTS[compare].items():
                    scores = [accuracy(data, overrides, seed, args.epochs, folder)
                              for seed in range(args.seeds)]
                    mean = statistics.mean(scores)
                    reference = mean if reference is None else reference
                    sent = ""
                    if compare == "compression":
                        fewer = bytes_per_step("none", SHAPES[name]) / \
                            bytes_per_step(variant, SHAPES[name])
                        sent = f"{bytes_per_step(variant, SHAPES[name]):11,d} {fewer:5.1f}x"
                    print(f"{name:8} {variant:12} {mean:7.2f} ({min(scores):6.2f}-"
                          f"{max(scores):6.2f}) {mean - reference:+9.2f} {sent}", flush=True)


if __name__ == "__main__":
    main()
