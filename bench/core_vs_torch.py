"""Training steps per second of dist_nn against PyTorch (CPU), one thread each, same run.

    python bench/core_vs_torch.py [--models mlp,cnn,resnet20] [--rounds 5] [--seconds 1.5]
                                  [--device cpu|gpu]

A step is forward, softmax cross-entropy, backward (without the gradient of the input, which
neither library needs) and an SGD step (momentum 0.9, weight decay 5e-4 on weights only) on a
fixed random float32 batch. The PyTorch model is dist_nn's own model
exported with torch_interop.to_torch_module: the same layers, sizes and initial weights.
Rounds alternate between the two; the median steps/s of each is reported. With --device gpu
dist_nn runs on CuPy and PyTorch on CUDA (both synchronised before the clock is read).
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch load their thread pools

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dist_nn import backend, models, nn, optim  # noqa: E402
from dist_nn.torch_interop import to_torch_module  # noqa: E402

torch.set_num_threads(1)

# name -> (model name, input shape, batch size, builder options)
BENCHMARKS = {
    "mlp": ("mlp", (1, 28, 28), 128, dict(hidden=(1024, 1024))),
    "cnn": ("cnn", (3, 32, 32), 64, dict(channels=(32, 64), hidden=256, dropout=0.5)),
    "resnet20": ("resnet20", (3, 32, 32), 64, {}),
}
SGD_OPTIONS = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)


def ours_step(model_name, shape, batch, options, x, y):
    model = models.build(model_name, shape, 10, **options)
    nn.skip_input_grad(model)  # as torch skips it for an input that does not require grad
    loss = nn.SoftmaxCrossEntropy()
    opt = optim.SGD(model.parameters(), **SGD_OPTIONS)

    def step():
        opt.zero_grad()
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        opt.step()
    return model, step


def torch_step(model, x, y, device):
    twin = to_torch_module(model).to(device)
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


def steps_per_second(step, seconds, synchronize):
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += 1
        if count % 10 == 0:  # bound the queue of asynchronous GPU work
            synchronize()
    synchronize()
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BENCHMARKS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="per round and library")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = parser.parse_args()
    backend.use(args.device, "float32")
    torch_device = "cuda" if args.device == "gpu" else "cpu"
    syncs = {"ours": backend.synchronize,
             "torch": torch.cuda.synchronize if args.device == "gpu" else (lambda: None)}
    where = (backend.cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
             if args.device == "gpu" else f"{platform.machine()}, 1 thread each")
    print(f"# {where}, numpy {np.__version__}, torch {torch.__version__}, float32")
    print(f"{'model':10} {'batch':>5} {'dist_nn steps/s':>16} {'torch steps/s':>14} {'ratio':>6}")
    for name in args.models.split(","):
        model_name, shape, batch, options = BENCHMARKS[name]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        y = rng.integers(0, 10, batch).astype(np.int64)
        backend.seed(0)
        model, ours = ours_step(model_name, shape, batch, options, backend.to_device(x),
                                backend.to_device(y))
        theirs = torch_step(model, x, y, torch_device)
        for step in (ours, theirs):  # warm up caches and allocators
            for _ in range(3):
                step()
        rates = {"ours": [], "torch": []}
        for _ in range(args.rounds):
            for key, step in (("ours", ours), ("torch", theirs)):
                rates[key].append(steps_per_second(step, args.seconds, syncs[key]))
        ours_rate, torch_rate = (statistics.median(rates[k]) for k in ("ours", "torch"))
        print(f"{name:10} {batch:5d} {ours_rate:16.2f} {torch_rate:14.2f} "
              f"{ours_rate / torch_rate:6.2f}", flush=True)


if __name__ == "__main__":
    main()
