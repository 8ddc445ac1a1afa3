"""dist_nn's layer core against PyTorch (CPU), one thread each, same run: training steps per
second, achieved GEMM GFLOP/s, and peak memory of a training step and of an evaluation.

    python bench/core_vs_torch.py [--models mlp,cnn,resnet20] [--rounds 5] [--seconds 1.5]
                                  [--device cpu|gpu] [--no-memory] [--profile resnet20]

A step is forward, softmax cross-entropy, backward (without the gradient of the input, which
neither library needs) and an SGD step (momentum 0.9, weight decay 5e-4 on weights only) on a
fixed random float32 batch. The PyTorch model is dist_nn's own model
exported with torch_interop.to_torch_module: the same layers, sizes and initial weights.
Rounds alternate between the two and every step is timed alone; steps/s is 1 / the fastest
step of each (as timeit advises: slower steps measure what else the machine was doing, and a
shared virtual machine's speed drifts by 10-20% from second to second).

GFLOP/s: the multiply-adds of every Conv2d and Linear in a step (forward, input and weight
gradients, 2 FLOPs each), divided by the step's time: what the GEMMs achieve within a step.

Memory (CPU): each figure comes from a fresh process that builds the model and its batch, then
runs one training step (or one forward of `EVAL_BATCH` samples in eval mode under
`nn.no_grad()` / `torch.no_grad()`); the figure is the growth of the peak resident set
(VmHWM) over the resident set before it: activations, caches and temporaries of the step.

--profile MODEL: time per layer type (forward and backward) of our training step.
With --device gpu dist_nn runs on CuPy and PyTorch on CUDA (no memory or profile figures).
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch load their thread pools

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a plain checkout: dist_nn need not be installed

from dist_nn import backend, models, nn, optim  # noqa: E402
from dist_nn.torch_interop import to_torch_module  # noqa: E402

torch.set_num_threads(1)

# name -> (model name, input shape, batch size, builder options)
BENCHMARKS = {
    "mlp": ("mlp", (1, 28, 28), 128, dict(hidden=(1024, 1024))),
    "cnn": ("cnn", (3, 32, 32), 64, dict(channels=(32, 64), hidden=256, dropout=0.5)),
    "resnet20": ("resnet20", (3, 32, 32), 64, {}),
}
EVAL_BATCH = 256
SGD_OPTIONS = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)


def batch_for(name, batch=None):
    model_name, shape, default_batch, options = BENCHMARKS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch or default_batch,) + shape).astype(np.float32)
    return x, rng.integers(0, 10, len(x)).astype(np.int64)


def build_ours(name):
    model_name, shape, _, options = BENCHMARKS[name]
    backend.seed(0)
    return models.build(model_name, shape, 10, **options)


def ours_step(model, x, y):
    nn.skip_input_grad(model)  # as torch skips it for an input that does not require grad
    loss = nn.SoftmaxCrossEntropy()
    opt = optim.SGD(model.parameters(), **SGD_OPTIONS)

    def step():
        opt.zero_grad()
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        opt.step()
    return step


def torch_step(twin, x, y, device):
    # torch decays every parameter unless grouped: exclude biases and norm parameters as we do
    decay = [p for n, p in twin.named_parameters() if n.endswith("weight") and p.ndim > 1]
    rest = [p for n, p in twin.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
    opt = torch.optim.SGD([{"params": decay}, {"params": rest, "weight_decay": 0.0}],
                          **SGD_OPTIONS)
    loss = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def step():
        opt.zero_grad()
        loss(twin(tx), ty).backward()
        opt.step()
    return step


def gemm_flops(model, x):
    """FLOPs of the Conv2d and Linear GEMMs in one training step on batch x (no gradient of
    the model's input): 2 per multiply-add, forward + weight gradient + input gradient."""
    macs = []

    def record(layer, y):
        per_output = (layer.in_features if isinstance(layer, nn.Linear) else
                      layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1])
        macs.append(y.size * per_output)
    layers = [m for _, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        layer.add_forward_hook(record)
    model.forward(x)
    for layer in layers:
        layer.remove_forward_hook(record)
    return 2 * (3 * sum(macs) - macs[0])  # the first layer computes no input gradient


def step_times(step, seconds, synchronize):
    """The durations of the steps run in `seconds` (at least one), each timed alone."""
    times, start = [], time.perf_counter()
    while not times or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        step()
        synchronize()  # a GPU step is timed to its end, not to its launch
        times.append(time.perf_counter() - begin)
    return times


# --- memory: one measurement per fresh process ------------------------------------------------
def _status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure_memory(library, name, mode):
    """Peak resident growth (MiB) of one training step ("train") or one no-grad evaluation
    forward of EVAL_BATCH samples ("eval"), in this (fresh) process. A step on 2 samples runs
    first, so that loading compiled code (numba's cache, oneDNN's) is not counted."""
    model = build_ours(name)
    twin = to_torch_module(model) if library == "torch" else None

    def runner(x, y):
        if library == "ours":
            return (ours_step(model, x, y) if mode == "train" else
                    lambda: _no_grad_forward(model.eval(), x))
        return (torch_step(twin, x, y, "cpu") if mode == "train" else
                lambda: torch.no_grad()(twin.eval())(torch.from_numpy(x)))
    x, y = batch_for(name, EVAL_BATCH if mode == "eval" else None)
    runner(x[:2], y[:2])()
    run = runner(x, y)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    before = _status_kib("VmRSS")
    run()
    return (_status_kib("VmHWM") - before) / 1024


def _no_grad_forward(model, x):
    with nn.no_grad():
        return model.forward(x)


def memory_in_fresh_process(library, name, mode):
    out = subprocess.run([sys.executable, __file__, "--memory-child", library, name, mode],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


# --- per-layer-type profile of our step ---------------------------------------------------------
def profile(name, steps=20):
    """Seconds per step spent in each leaf layer type's forward and backward, and the rest."""
    x, y = batch_for(name)
    model = build_ours(name)
    step = ours_step(model, x, y)
    times = collections.Counter()

    def timed(layer, kind):
        method = getattr(layer, kind)

        def run(arg):
            start = time.perf_counter()
            result = method(arg)
            times[f"{type(layer).__name__}.{kind}"] += time.perf_counter() - start
            return result
        return run
    for _, layer in model.named_modules():
        if not layer.named_children() and type(layer).__name__ != "Sequential":
            for kind in ("forward", "backward"):
                object.__setattr__(layer, kind, timed(layer, kind))
    step()
    times.clear()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    total = (time.perf_counter() - start) / steps
    print(f"# profile of one {name} training step (ms), dist_nn")
    for key, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"{key:28} {1e3 * seconds / steps:8.1f}")
    print(f"{'rest (loss, optimizer, adds)':28} {1e3 * (total - sum(times.values()) / steps):8.1f}")
    print(f"{'step':28} {1e3 * total:8.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BENCHMARKS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="per round and library")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory figures")
    parser.add_argument("--profile", metavar="MODEL", help="print our per-layer profile only")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    backend.use(args.device, "float32")
    if args.memory_child:
        print(json.dumps(measure_memory(*args.memory_child)))
        return
    if args.profile:
        return profile(args.profile)
    torch_device = "cuda" if args.device == "gpu" else "cpu"
    syncs = {"ours": backend.synchronize,
             "torch": torch.cuda.synchronize if args.device == "gpu" else (lambda: None)}
    where = (backend.cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
             if args.device == "gpu" else f"{platform.machine()}, 1 thread each")
    memory = args.device == "cpu" and not args.no_memory
    print(f"# {where}, numpy {np.__version__}, torch {torch.__version__}, float32, "
          f"compiled kernels: {nn.kernels.status()}")
    print(f"{'model':10} {'batch':>5} {'dist_nn/s':>9} {'torch/s':>8} {'ratio':>6} "
          f"{'GFLOP/s':>7} {'torch':>6}" + (
              f" {'train MiB':>9} {'torch':>6} {'eval MiB':>8} {'torch':>6}" if memory else ""))
    for name in args.models.split(","):
        x, y = batch_for(name)
        model = build_ours(name)
        flops = gemm_flops(model, backend.to_device(x))
        theirs = torch_step(to_torch_module(model).to(torch_device), x, y, torch_device)
        ours = ours_step(model, backend.to_device(x), backend.to_device(y))
        for step in (ours, theirs):  # warm up caches and allocators
            for _ in range(3):
                step()
        times = {"ours": [], "torch": []}
        for _ in range(args.rounds):
            for key, step in (("ours", ours), ("torch", theirs)):
                times[key] += step_times(step, args.seconds, syncs[key])
        ours_rate, torch_rate = (1 / min(times[k]) for k in ("ours", "torch"))
        line = (f"{name:10} {len(x):5d} {ours_rate:9.2f} {torch_rate:8.2f} "
                f"{ours_rate / torch_rate:6.2f} {flops * ours_rate / 1e9:7.1f} "
                f"{flops * torch_rate / 1e9:6.1f}")
        if memory:
            line += " " + " ".join(f"{memory_in_fresh_process(lib, name, mode):{w}.0f}"
                                   for mode, w in (("train", 9), ("eval", 8))
                                   for lib, w in (("ours", w), ("torch", 6)))
        print(line, flush=True)


if __name__ == "__main__":
    main()
