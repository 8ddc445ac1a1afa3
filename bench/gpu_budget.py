"""Device operations (≈ kernel launches) and host syncs of one training step on the GPU path,
counted on the CuPy stand-in (tests/gpu_standin), beside PyTorch's count for the same step.

    python bench/gpu_budget.py [--models mlp,cnn,resnet20] [--batch 32] [--sites 8]

Each row is the Trainer's own step (forward, loss, backward, gradient allreduce, guards,
optimizer) at steady state, the mean of steps 4-6: on one rank; "+syncbn": rank 0 of two
ranks under mpiexec through the NCCL path (the stand-in's NCCL runs over MPI), SyncBN on,
whose collectives count as operations. PyTorch's figure is the number of ATen kernels its autograd step dispatches on the
CPU (views and metadata-only ops left out), the launches its CUDA build makes without CUDA
graphs or torch.compile. Counts, not speed: the stand-in runs NumPy on the host
(docs/correctness.md, "The GPU path without a GPU"). tests/test_gpu_budget.py asserts the
resnet20 budgets: <= 600 operations and <= 2 host syncs a step.
"""
import os

os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")

import argparse  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "gpu_standin"), str(ROOT)]  # the stand-in is `cupy`

import cupy  # noqa: E402
from cupy import _standin  # noqa: E402

from datasets import synthetic  # noqa: E402
from dist_nn import Trainer, backend  # noqa: E402
from dist_nn.monitor import Progress  # noqa: E402
from dist_nn.run_state import RunningTotals  # noqa: E402
from launch import mpirun  # noqa: E402

assert cupy.__file__.startswith(str(ROOT / "tests" / "gpu_standin")), cupy.__file__

SHAPES = {"mlp": (1, 28, 28), "cnn": (3, 32, 32), "resnet20": (3, 32, 32)}
WARMUP, MEASURED = 3, 3


def trainer_step_counts(model, batch, data_dir, extra=()):
    """(operations, syncs, the counted Counts) of one steady-state step of `model`."""
    shape = SHAPES[model]
    path = Path(data_dir) / f"{model}.h5"
    if not path.exists():
        synthetic.convert(path, 2 * batch * (WARMUP + MEASURED + 1), shape=shape, val_samples=0)
    overrides = [f"model.name={model}", "train.device=gpu", f"data.path={path}",
                 f"data.batch_size={batch}", f"log.run_dir={data_dir}/run-{model}",
                 "log.overwrite=true", "log.tensorboard=off", "checkpoint.every_steps=0",
                 *extra]
    trainer = Trainer(None, overrides)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.build()
    # what train_epoch sets up before its steps
    trainer.window_totals, trainer.window_start = RunningTotals(), time.perf_counter()
    trainer.progress = Progress(trainer.steps_per_epoch, 0, enabled=False)
    batches = trainer.loader.epoch_batches(0, 0)
    with contextlib.redirect_stdout(io.StringIO()):  # the initial-loss check's notes
        for _ in range(WARMUP):
            trainer.step(batches)
    cupy.cuda.Device().synchronize()
    with _standin.counting() as counted:
        for _ in range(MEASURED):
            trainer.step(batches)
    trainer.run_dir.release()
    return counted.ops / MEASURED, counted.syncs / MEASURED, counted


def torch_kernels(model, batch):
    """ATen kernels of one PyTorch training step of the same model (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    from dist_nn import models
    from dist_nn.torch_interop import to_torch_module
    with backend.using("cpu", "float32"):
        twin = to_torch_module(models.build(model, SHAPES[model], 10))
    opt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *SHAPES[model])
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(twin(x), y).backward()
        opt.step()
    for _ in range(WARMUP):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step()
    return sum(1 for event in profile.events() if event.name.startswith("aten::")
               and not event.cpu_children and event.name not in METADATA_OPS)


# ATen ops that only make views or read metadata: no kernel on a GPU.
METADATA_OPS = {"aten::view", "aten::reshape", "aten::_reshape_alias", "aten::as_strided",
                "aten::t", "aten::transpose", "aten::permute", "aten::expand", "aten::empty",
                "aten::empty_like", "aten::empty_strided", "aten::detach", "aten::alias",
                "aten::unsqueeze", "aten::squeeze", "aten::flatten", "aten::select",
                "aten::slice", "aten::resize_", "aten::lift_fresh", "aten::result_type",
                "aten::_unsafe_view", "aten::set_", "aten::unbind", "aten::numel",
                "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense"}


def two_ranks_counts(model, batch, data_dir):
    """trainer_step_counts of rank 0 of two ranks (NCCL path, SyncBN), run under mpiexec."""
    synthetic.convert(Path(data_dir) / f"{model}.h5", 2 * batch * (WARMUP + MEASURED + 1),
                      shape=SHAPES[model], val_samples=0)
    done = mpirun.run(2, [sys.executable, __file__, "--rank-of-two", model, "--batch",
                          str(batch), "--data-dir", data_dir],
                      env={"DIST_NN_STANDIN_GPUS": "2"}, capture_output=True, text=True,
                      timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"two ranks of {model} failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rank_of_two(args):
    """One of the two ranks of two_ranks_counts: rank 0 prints its counts as JSON."""
    ops, syncs, counted = trainer_step_counts(args.rank_of_two, args.batch, args.data_dir,
                                              ["train.comm=nccl", "model.sync_bn=true"])
    if int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))) == 0:
        print(json.dumps([ops, syncs, {k: dict(v) for k, v in counted.by_site.items()}]))


def show(label, ops, syncs, by_site, theirs, sites):
    ratio = f"{ops / theirs:.2f}" if theirs else "-"
    print(f"{label:<18}{ops:>11.0f}{syncs:>11.1f}{theirs or '-':>17}{ratio:>15}", flush=True)
    for kind in ("syncs", "ops"):
        for site, n in collections.Counter(by_site[kind]).most_common(sites):
            where = os.path.relpath(site, ROOT) if site != "?" else site
            print(f"    {kind:<5} {n / MEASURED:>7.1f}  {where}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn,resnet20")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sites", type=int, default=8, help="top call sites shown per row")
    parser.add_argument("--json", action="store_true",
                        help="print {row: [operations, host syncs]} as JSON instead")
    parser.add_argument("--rank-of-two", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank_of_two:
        return rank_of_two(args)
    rows = {}
    with tempfile.TemporaryDirectory() as data_dir, \
            contextlib.redirect_stdout(io.StringIO()) if args.json else contextlib.nullcontext():
        print(f"one training step, batch {args.batch}, on the CuPy stand-in "
              f"(steps {WARMUP + 1}-{WARMUP + MEASURED}, mean)")
        print(f"{'model':<18}{'operations':>11}{'host syncs':>11}{'PyTorch kernels':>17}"
              f"{'ops / PyTorch':>15}")
        for model in args.models.split(","):
            theirs = None if args.json else torch_kernels(model, args.batch)
            ops, syncs, counted = trainer_step_counts(model, args.batch, data_dir)
            rows[model] = [ops, syncs]
            show(model, ops, syncs, counted.by_site, theirs, args.sites)
            if model != "mlp":  # the others have BatchNorm
                ops, syncs, by_site = two_ranks_counts(model, args.batch, data_dir)
                rows[f"{model}+syncbn"] = [ops, syncs]
                show(f"{model}+syncbn", ops, syncs, by_site, theirs, args.sites)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
