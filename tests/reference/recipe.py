"""The training recipe against PyTorch: label-smoothed cross-entropy, clip_grad_norm_ on a
model's gradients, GradScaler's scale over a fixed sequence of overflow/clean steps, and one
float16 mixed-precision step of the CNN against torch.autocast("cpu", float16)."""
import importlib.util

import numpy as np

from dist_nn import backend, models, nn, optim

SMOOTHING = (0.1, 0.35)
CLIP_MAX_NORM = (0.5, 100.0)  # clipping, and a bound above the norm (nothing to clip)
# the scaler: False = a clean step, True = an Inf/NaN gradient; growth every 3 clean steps
SCALER_STEPS = [False, False, False, True, False, True, True, False, False, False, False,
                False, False, False, True, False]
SCALER_OPTIONS = dict(init_scale=2.0**10, growth_factor=2.0, backoff_factor=0.5,
                      growth_interval=3)
CNN_INPUT, CNN_BATCH, CNN_CLASSES = (1, 8, 8), 16, 10
LOSS_SCALE = {"fp16": 2.0**10, "bf16": 1.0, "exact": 1.0}  # bfloat16 needs no scaling


def make_inputs(seed):
    rng = np.random.default_rng(seed)
    inputs = {"logits": 2.0 * rng.standard_normal((7, 5)), "labels": rng.integers(0, 5, 7),
              "mlp.x": rng.standard_normal((6, 4)), "mlp.labels": rng.integers(0, 3, 6),
              "scaler.grads": rng.standard_normal((len(SCALER_STEPS), 3)),
              "cnn.x": rng.standard_normal((CNN_BATCH,) + CNN_INPUT),
              "cnn.labels": rng.integers(0, CNN_CLASSES, CNN_BATCH)}
    inputs.update({f"mlp.param.{k}": v for k, v in
                   _perturbed(rng, build_mlp().state_dict()).items()})
    inputs.update({f"cnn.param.{k}": v for k, v in
                   _perturbed(rng, build_cnn().state_dict()).items()})
    return inputs


def _perturbed(rng, state):
    return {k: v + 0.1 * rng.standard_normal(v.shape) if v.dtype.kind == "f" else v
            for k, v in state.items()}


def _state(inputs, prefix):
    return {k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)}


def build_mlp(dtype="float64"):
    with backend.using("cpu", dtype):
        backend.seed(0)
        # He's spread (the layers' default before PyTorch's): gradients that the 0.5 clip cuts
        return nn.Sequential(nn.Linear(4, 8, init="he"), nn.ReLU(), nn.Linear(8, 3, init="he"))


def build_cnn(dtype="float64"):
    with backend.using("cpu", dtype):
        backend.seed(0)
        return models.cnn(CNN_INPUT, CNN_CLASSES, channels=(4, 8), hidden=16, dropout=0.0)


# --- PyTorch -------------------------------------------------------------------------------
def _torch_cnn(torch):
    t = torch.nn
    return t.Sequential(t.Conv2d(1, 4, 3, padding=1, bias=False), t.BatchNorm2d(4), t.ReLU(),
                        t.MaxPool2d(2), t.Conv2d(4, 8, 3, padding=1, bias=False),
                        t.BatchNorm2d(8), t.ReLU(), t.MaxPool2d(2), t.Flatten(),
                        t.Linear(8 * 2 * 2, 16), t.ReLU(), t.Dropout(0.0), t.Linear(16, 10))


def _load(torch, module, state):
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return module


def torch_outputs(torch, inputs):
    F = torch.nn.functional
    out = {}
    for e in SMOOTHING:
        logits = torch.tensor(inputs["logits"], requires_grad=True)
        loss = F.cross_entropy(logits, torch.from_numpy(inputs["labels"]), label_smoothing=e)
        loss.backward()
        out[f"smoothing{e}.loss"] = loss.detach().numpy().copy()
        out[f"smoothing{e}.grad"] = logits.grad.numpy().copy()
    for max_norm in CLIP_MAX_NORM:
        t = torch.nn
        mlp = _load(torch, t.Sequential(t.Linear(4, 8), t.ReLU(), t.Linear(8, 3)).double(),
                    _state(inputs, "mlp.param."))
        F.cross_entropy(mlp(torch.from_numpy(inputs["mlp.x"])),
                        torch.from_numpy(inputs["mlp.labels"])).backward()
        norm = torch.nn.utils.clip_grad_norm_(mlp.parameters(), max_norm)
        out[f"clip{max_norm}.norm"] = norm.numpy().copy()
        out.update({f"clip{max_norm}.grad.{n}": p.grad.numpy().copy()
                    for n, p in mlp.named_parameters()})
    scaler = torch.amp.GradScaler("cpu", **SCALER_OPTIONS)
    weight = torch.nn.Parameter(torch.zeros(3, dtype=torch.float32))
    sgd = torch.optim.SGD([weight], lr=0.1)
    scales, weights = [], []
    for t, overflow in enumerate(SCALER_STEPS):
        scaler.scale(torch.ones(()))  # GradScaler sets itself up on the first scale()
        grad = inputs["scaler.grads"][t] * scaler.get_scale()
        grad[1] = np.inf if overflow else grad[1]
        weight.grad = torch.tensor(grad, dtype=torch.float32)
        scaler.step(sgd)
        scaler.update()
        scales.append(scaler.get_scale())
        weights.append(weight.detach().numpy().copy())
    out["scaler.scales"], out["scaler.weights"] = np.array(scales), np.array(weights)
    out["scaler.defaults"] = np.array([torch.amp.GradScaler("cpu").get_scale(),
                                       torch.amp.GradScaler("cpu").get_growth_interval()])
    for mode, half in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("exact", None)):
        cnn = _load(torch, _torch_cnn(torch), _state(inputs, "cnn.param."))
        cnn = cnn.double() if half is None else cnn.float()
        x = torch.tensor(inputs["cnn.x"], dtype=torch.float64 if half is None else torch.float32)
        with torch.autocast("cpu", dtype=half or torch.float16, enabled=half is not None):
            loss = F.cross_entropy(cnn(x), torch.from_numpy(inputs["cnn.labels"]))
        scale = LOSS_SCALE[mode]
        (loss * scale).backward()
        out[f"{mode}.loss"] = loss.detach().double().numpy().copy()
        out.update({f"{mode}.grad.{n}": p.grad.double().numpy() / scale
                    for n, p in cnn.named_parameters()})
    return out


def generate(torch):
    inputs = make_inputs(seed=0)
    return {"recipe": {**inputs, **torch_outputs(torch, inputs)}}


# --- ours ------------------------------------------------------------------------------
def our_outputs(inputs):
    out = {}
    for e in SMOOTHING:
        loss = nn.SoftmaxCrossEntropy(label_smoothing=e)
        out[f"smoothing{e}.loss"] = np.asarray(loss.forward(inputs["logits"], inputs["labels"]))
        out[f"smoothing{e}.grad"] = loss.backward()
    for max_norm in CLIP_MAX_NORM:
        mlp = build_mlp()
        mlp.load_state_dict(_state(inputs, "mlp.param."))
        loss = nn.SoftmaxCrossEntropy()
        loss.forward(mlp.forward(inputs["mlp.x"]), inputs["mlp.labels"])
        mlp.backward(loss.backward())
        out[f"clip{max_norm}.norm"] = np.asarray(optim.clip_grad_norm(mlp.parameters(), max_norm))
        out.update({f"clip{max_norm}.grad.{n}": p.grad.copy() for n, p in mlp.named_parameters()})
    scaler = optim.LossScaler(**SCALER_OPTIONS)
    weight = nn.Parameter(np.zeros(3, dtype=np.float32))
    sgd = optim.SGD([weight], lr=0.1)
    scales, weights = [], []
    for t, overflow in enumerate(SCALER_STEPS):
        grad = inputs["scaler.grads"][t] * scaler.scale
        grad[1] = np.inf if overflow else grad[1]
        weight.grad[...] = grad
        scaler.step(sgd)
        scaler.update()
        scales.append(scaler.scale)
        weights.append(weight.data.copy())
    out["scaler.scales"], out["scaler.weights"] = np.array(scales), np.array(weights)
    default = optim.LossScaler()
    out["scaler.defaults"] = np.array([default.scale, default.growth_interval])
    out.update(amp_step(inputs, "fp16"))
    if importlib.util.find_spec("ml_dtypes"):  # the bf16 extra; tests/nn/test_amp.py skips bf16
        out.update(amp_step(inputs, "bf16"))
    return out


def amp_step(inputs, mode):
    """Loss and parameter gradients of one "fp16" or "bf16" step of the CNN, with our
    float32 master weights, autocast and (fp16) loss scaling."""
    with backend.using("cpu", "float32"):
        cnn = build_cnn("float32")
        cnn.load_state_dict(_state(inputs, "cnn.param."))
        flat = optim.FlatParameters(cnn.parameters())
        autocast = nn.amp.Autocast(cnn, flat, mode)
        loss_fn = nn.SoftmaxCrossEntropy()
        flat.grad.fill(0)
        with autocast():
            loss = loss_fn.forward(cnn.forward(inputs["cnn.x"].astype(np.float32)),
                                   inputs["cnn.labels"])
            cnn.backward(loss_fn.backward() * LOSS_SCALE[mode])
        flat.grad /= LOSS_SCALE[mode]
    out = {f"{mode}.loss": np.asarray(loss, dtype=np.float64)}
    out.update({f"{mode}.grad.{n}": p.grad.astype(np.float64) for n, p in cnn.named_parameters()})
    return out
