"""Sanity checks that catch a bad run early, and guards that stop one going wrong.

- initial_loss_warning: a C-class softmax starts near ln C; far from it means bad labels,
  a bad initialisation scale or a broken output layer.
- ExplosionGuard: stop once the smoothed loss stays above `factor` times a sane reference
  (the learning rate is almost always too high); one-step spikes that recover pass.
- first_nonfinite_layer / first_nonfinite_gradient: which layer first produced NaN or Inf,
  by re-running the forward pass with hooks (only once something went wrong), or which
  parameter's gradient is not finite.
- Debug statistics: the fraction of dead ReLU units per layer, and per parameter the ratio
  of the update's norm to the weight's (about 1e-3 is healthy; Karpathy's rule of thumb).
"""
import json
import math
from pathlib import Path

import numpy

from .. import backend, models, nn, saved
from ..nn.gradcheck import check_gradients


class TrainingStopped(RuntimeError):
    """A guard stopped the run; the message says why and what to try."""


def initial_loss_warning(loss, num_classes):
    """A warning (or None) when the first loss is far from ln(num_classes)."""
    expected = math.log(num_classes)
    if not math.isfinite(loss) or not 0.5 * expected <= loss <= 2.0 * expected:
        return (f"warning: initial loss {loss:.4g} is far from ln({num_classes}) = "
                f"{expected:.4g}, what a {num_classes}-class softmax gives at initialisation: "
                "check the labels, the initialisation scale and the output layer")
    return None


class ExplosionGuard:
    """Stop a run whose loss really diverges, not one that spikes and recovers: the smoothed
    loss (a bias-corrected exponential moving average, as Adam's moments) must stay above
    `factor` times the reference for `patience` consecutive steps. The reference is the first
    loss but never less than `floor` (ln C for a C-class softmax, what fresh weights give), so
    a fine-tuned model whose first loss is tiny is not called diverging when its loss moves
    back towards ordinary values. factor = 0 turns the guard off."""

    def __init__(self, factor, floor=0.0, beta=0.9, patience=10):
        self.factor, self.floor, self.beta, self.patience = factor, floor, beta, patience
        self.reference, self.average, self.count, self.above = None, 0.0, 0, 0

    def check(self, loss, step, lr):
        """Account the loss of `step` (numbered as the records number it)."""
        if not math.isfinite(loss):
            return  # the NaN/Inf check names the layer instead
        if self.reference is None:
            self.reference = max(loss, self.floor)
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * loss
        smoothed = self.average / (1 - self.beta ** self.count)
        self.above = self.above + 1 if self.factor and smoothed > self.factor * self.reference \
            else 0
        if self.above >= self.patience:
            raise TrainingStopped(
                f"smoothed loss {smoothed:.4g} at step {step} has exceeded {self.factor:g}x "
                f"the reference {self.reference:.4g} for {self.patience} steps: the run is "
                f"diverging; lower the learning rate (now {lr:.4g})")

    def state_dict(self):
        return {"reference": self.reference, "average": self.average, "count": self.count,
                "above": self.above}

    def load_state_dict(self, state):
        state = saved.checked(state, "explosion guard", reference=saved.NUMBER_OR_NONE,
                              average=saved.NUMBER, count=saved.COUNT, above=saved.COUNT)
        self.reference, self.average = state["reference"], state["average"]
        self.count, self.above = state["count"], state["above"]


def _all_finite(array):
    xp = backend.get_array_module(array)
    return bool(xp.isfinite(array).all())


def first_nonfinite_layer(model, x):
    """(name, module) of the first leaf module whose forward output on x is not finite, or
    None. Runs one forward pass with hooks; BatchNorm statistics are restored afterwards."""
    state = model.state_dict()
    leaves = [(name, m) for name, m in model.named_modules() if not m.named_children()]
    found = []

    def check(name):
        def hook(module, output):
            if not found and not _all_finite(output):
                found.append((name, module))
        return hook

    hooks = [(m, check(name)) for name, m in leaves]
    for m, hook in hooks:
        m.add_forward_hook(hook)
    try:
        model.forward(x)
    finally:
        for m, hook in hooks:
            m.remove_forward_hook(hook)
        model.load_state_dict(state)
    return found[0] if found else None


def first_nonfinite_gradient(model):
    """Name of the first parameter, in backward order, whose gradient is not finite."""
    for name, p in reversed(list(model.named_parameters())):
        if p.requires_grad and not _all_finite(p.grad):
            return name
    return None


def nonfinite_report(model, x, step):
    """The message that stops a run whose loss or gradients went NaN/Inf."""
    layer = first_nonfinite_layer(model, x)
    if layer is not None:
        name, module = layer
        bad = [n for n, p in module.own_parameters() if not _all_finite(p.data)]
        cause = f" (its parameters {bad} hold NaN/Inf)" if bad else ""
        return (f"NaN/Inf at step {step}: first produced by layer `{name}` "
                f"({type(module).__name__}){cause} in the forward pass; lower the learning "
                "rate or check the data")
    grad = first_nonfinite_gradient(model)
    where = f"first in the gradient of `{grad}`" if grad else "in the loss"
    return f"NaN/Inf at step {step}, {where}; lower the learning rate or check the data"


class DebugStatistics:
    """Per-layer dead-ReLU fractions (units that output 0 for every sample of a batch) and
    per-parameter update/weight ratios, gathered when `active` (debug mode, every few steps)."""

    def __init__(self, model):
        self.model, self.active, self.dead = model, False, {}
        self.relus = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
        for name, m in self.relus:
            m.add_forward_hook(self._relu_hook(name))

    def _relu_hook(self, name):
        def hook(module, output):
            if self.active and module.training:
                units = output.reshape(len(output), output.shape[1], -1).max(axis=(0, 2))
                self.dead[name] = float((units <= 0).mean())
        return hook

    def before_step(self):
        self.weights = {n: p.data.copy() for n, p in self.model.named_parameters()
                        if p.requires_grad}

    def update_ratios(self):
        xp = backend.xp
        ratios = {}
        for name, p in self.model.named_parameters():
            if name in self.weights:
                norm = float(xp.linalg.norm(self.weights[name]))
                change = float(xp.linalg.norm(p.data - self.weights[name]))
                ratios[name] = change / norm if norm > 0 else float("inf")
        return ratios


def write_debug_report(run_dir, step, statistics):
    """Append the debug statistics of a step to run_dir/debug.jsonl and print a summary."""
    report = {"step": step, "dead_relu": statistics.dead,
              "update_ratio": statistics.update_ratios()}
    with open(Path(run_dir) / "debug.jsonl", "a") as f:
        f.write(json.dumps(report) + "\n")
    dead = max(statistics.dead.items(), key=lambda kv: kv[1], default=("-", 0.0))
    ratios = report["update_ratio"]
    low, high = min(ratios.values(), default=0.0), max(ratios.values(), default=0.0)
    print(f"debug step {step}: most dead ReLU units {dead[1]:.0%} in `{dead[0]}`; "
          f"update/weight ratios {low:.1e}..{high:.1e} (healthy near 1e-3)", flush=True)


NUDGE = 0.01  # the noise added to the samples of the gradient check (they are standardised)


def gradient_check_report(config, model, split, loss_fn, samples=4, entries=6):
    """Central differences against backward for a float64 copy of the model on a few real
    samples (a few entries of every parameter). The samples are nudged by a little noise
    (1% of their spread): a flat image background puts equal values in max-pool windows,
    ties where the forward has no derivative; entries still on a kink are left out, said."""
    with backend.using(dtype="float64"):
        twin = models.from_config(config.model, split.sample_shape, split.num_classes)
        twin.load_state_dict(model.state_dict())
        x = split.read(range(min(samples, len(split)))).astype("float64")
        x = (x - split.mean[:, None, None]) / split.std[:, None, None]
        x += numpy.random.default_rng(0).normal(0.0, NUDGE, x.shape)
        y = split.labels[:len(x)]
        errors = check_gradients(twin, backend.to_device(x), loss_fn, backend.to_device(y),
                                 max_entries=entries)
    worst = max(errors, key=errors.get)
    verdict = "ok" if errors[worst] < 1e-5 else "WRONG: backward disagrees with the forward"
    kinks = sum(errors.kinks.values())
    left_out = f"; left out, on a kink or tie of the forward: {kinks}" if kinks else ""
    return (f"gradient check (float64, {len(x)} samples, {entries} entries per parameter"
            f"{left_out}): max relative error {errors[worst]:.2e} at `{worst}` - {verdict}")