"""Mixed-precision training steps against float32, dist_nn and PyTorch in the same run.

    python bench/amp_step.py [--models cnn,resnet20] [--rounds 3] [--seconds 1.5]
                             [--device cpu|gpu] [--tf32]

A step is forward, softmax cross-entropy, backward and an SGD step on a fixed random batch,
in float32 and under mixed precision (fp16 with loss scaling, bf16 when ml_dtypes is there):
dist_nn with nn.amp.Autocast and optim.LossScaler; PyTorch with torch.autocast and GradScaler on
the same model (exported by torch_interop). Prints steps/s and each mode's speed relative to
float32 of the same library. On a CPU half precision is expected to be slower: neither NumPy
nor OpenBLAS has half-precision GEMMs (NumPy's float16 matmul is a plain loop that converts
every element), and CPUs without AVX512-FP16/AMX compute half precision by converting to
float32 anyway, so the casts are pure overhead. Tensor-core GPUs are where it pays.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch load their thread pools

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
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
    "cnn": ("cnn", (3, 32, 32), 64, dict(channels=(32, 64), hidden=256, dropout=0.5)),
    "resnet20": ("resnet20", (3, 32, 32), 64, {}),
}


def ours_step(model, mode, x, y):
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = nn.SoftmaxCrossEntropy()
    if mode == "fp32":
        def step():
            opt.zero_grad()
            loss.forward(model.forward(x), y)
            model.backward(loss.backward())
            opt.step()
        return step
    autocast = nn.amp.Autocast(model, opt.flat, mode)
    scaler = optim.LossScaler() if mode == "fp16" else None

    def step():
        opt.zero_grad()
        with autocast():
            loss.forward(model.forward(x), y)
            model.backward(loss.backward() * (scaler.scale if scaler else 1.0))
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
    return step


def torch_step(model, mode, x, y, device):
    twin = to_torch_module(model).to(device)
    opt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    loss = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    half = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[mode]
    scaler = torch.amp.GradScaler(device, enabled=mode == "fp16")

    def step():
        opt.zero_grad()
        with torch.autocast(device, dtype=half or torch.float32, enabled=half is not None):
            value = loss(twin(tx), ty)
        scaler.scale(value).backward()
        scaler.step(opt)
        scaler.update()
    return step


def steps_per_second(step, seconds, synchronize):
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 2:
        step()
        count += 1
        if count % 10 == 0:
            synchronize()
    synchronize()
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BENCHMARKS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5, help="per round, library, mode")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--tf32", action="store_true", help="GPU: float32 GEMMs in TF32 "
                        "(PyTorch's allow_tf32; for CuPy set CUPY_TF32=1)")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    backend.use(args.device, "float32")
    device = "cuda" if args.device == "gpu" else "cpu"
    syncs = {"dist_nn": backend.synchronize,
             "torch": torch.cuda.synchronize if args.device == "gpu" else (lambda: None)}
    modes = ["fp32", "fp16"]
    try:
        nn.amp.half_dtype("bf16")
        modes.append("bf16")
    except nn.amp.PrecisionError as error:
        print(f"# bf16 left out: {error}")
    where = (backend.cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
             if args.device == "gpu" else f"{platform.machine()}, 1 thread each")
    print(f"# {where}, numpy {np.__version__}, torch {torch.__version__}"
          + (", fp32 = TF32" if args.tf32 else ""))
    print(f"{'model':9} {'library':8} " + " ".join(f"{m + ' steps/s':>13}" for m in modes)
          + " " + " ".join(f"{m + '/fp32':>10}" for m in modes[1:]))
    for name in args.models.split(","):
        model_name, shape, batch, options = BENCHMARKS[name]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        y = rng.integers(0, 10, batch).astype(np.int64)
        steps = {}
        for mode in modes:
            backend.seed(0)
            model = models.build(model_name, shape, 10, **options)
            nn.skip_input_grad(model)
            steps["torch", mode] = torch_step(model, mode, x, y, device)
            steps["dist_nn", mode] = ours_step(model, mode, backend.to_device(x),
                                               backend.to_device(y))
        for step in steps.values():  # warm up caches and allocators
            step()
        rates = {key: [] for key in steps}
        for _ in range(args.rounds):
            for key, step in steps.items():
                rates[key].append(steps_per_second(step, args.seconds, syncs[key[0]]))
        for library in ("dist_nn", "torch"):
            median = {m: statistics.median(rates[library, m]) for m in modes}
            print(f"{name:9} {library:8} " + " ".join(f"{median[m]:13.2f}" for m in modes) + " "
                  + " ".join(f"{median[m] / median['fp32']:10.2f}" for m in modes[1:]),
                  flush=True)


if __name__ == "__main__":
    main()
