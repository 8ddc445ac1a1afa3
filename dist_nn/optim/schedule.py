"""Learning-rate and momentum schedules.

A schedule owns one optimizer attribute (`lr`, or `momentum` for MomentumRamp). It reads the
attribute's value at construction as the base value, sets it for t = 0 at once, and sets it
for t + 1 on each `step()`: call step() once per optimizer step (or once per epoch, if the
lengths below are given in epochs). Each value is a closed form of t (PlateauDecay reacts to
a metric instead), so a schedule's whole state is t (and PlateauDecay's cuts). The base value
is saved but not loaded: it is the configuration's (the optimizer's value when the schedule
was built), so that a resumed run given a new learning rate uses it from where it stands.
"""
import math

from .. import saved


class Schedule:
    attribute = "lr"

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base = getattr(optimizer, self.attribute)
        self.t = 0
        self._apply()

    def factor(self, t):
        """Multiplier of the base value at step t."""
        return 1.0

    def value(self, t):
        return self.base * self.factor(t)

    def _apply(self):
        setattr(self.optimizer, self.attribute, self.value(self.t))

    def step(self, metric=None):
        self.t += 1
        self._apply()

    def state_dict(self):
        return {"t": self.t, "base": self.base}

    def load_state_dict(self, state):
        """Continue from a state_dict() at its t, with this schedule's own base value."""
        state = saved.checked(state, f"schedule {type(self).__name__}", t=saved.COUNT,
                              base=saved.NUMBER)
        self.t = state["t"]
        self._apply()


Constant = Schedule


class StepDecay(Schedule):
    """lr = base * gamma^(t // step_size) (torch StepLR)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def factor(self, t):
        return self.gamma ** (t // self.step_size)


class MultiStepDecay(Schedule):
    """lr = base * gamma^(number of milestones <= t) (torch MultiStepLR)."""

    def __init__(self, optimizer, milestones, gamma=0.1):
        self.milestones, self.gamma = sorted(milestones), gamma
        super().__init__(optimizer)

    def factor(self, t):
        return self.gamma ** sum(t >= m for m in self.milestones)


class ExponentialDecay(Schedule):
    """lr = base * exp(-k t) (torch ExponentialLR with gamma = exp(-k))."""

    def __init__(self, optimizer, k):
        self.k = k
        super().__init__(optimizer)

    def factor(self, t):
        return math.exp(-self.k * t)


class InverseTimeDecay(Schedule):
    """lr = base / (1 + k t)."""

    def __init__(self, optimizer, k):
        self.k = k
        super().__init__(optimizer)

    def factor(self, t):
        return 1.0 / (1.0 + self.k * t)


class CosineDecay(Schedule):
    """lr = min_lr + (base - min_lr) (1 + cos(pi t / T)) / 2 for t <= T, then min_lr
    (torch CosineAnnealingLR with T_max = T, eta_min = min_lr, without its restart)."""

    def __init__(self, optimizer, total, min_lr=0.0):
        self.total, self.min_lr = total, min_lr
        super().__init__(optimizer)

    def value(self, t):
        progress = min(t, self.total) / self.total
        return self.min_lr + (self.base - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2


class Warmup(Schedule):
    """Linear warmup (Goyal et al.) from start_factor * base to base over `steps`, then
    `after` (a schedule on the same optimizer) from its own t = 0. As torch SequentialLR of
    LinearLR(start_factor, total_iters=steps) and `after`, with milestone `steps`."""

    def __init__(self, optimizer, steps, start_factor=0.1, after=None):
        if isinstance(after, PlateauDecay):
            raise ValueError("Warmup needs a schedule that is a function of t after it, "
                             "not PlateauDecay")
        self.steps, self.start_factor = steps, start_factor
        self.after = after if after is not None else Schedule(optimizer)
        super().__init__(optimizer)

    def value(self, t):
        if t < self.steps:
            return self.after.base * (self.start_factor + (1 - self.start_factor) * t / self.steps)
        return self.after.value(t - self.steps)


class PlateauDecay(Schedule):
    """Multiply lr by `factor` when the metric passed to step(metric) has not improved (by
    more than `threshold`, relative or absolute) for more than `patience` steps; wait
    `cooldown` steps after each cut; never below min_lr. As torch ReduceLROnPlateau."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError("PlateauDecay: mode must be 'min' or 'max' and threshold_mode "
                             f"'rel' or 'abs', got {mode!r} and {threshold_mode!r}")
        if factor >= 1.0:
            raise ValueError(f"PlateauDecay: factor must be < 1, got {factor}")
        self.mode, self.decay, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_steps = self.cooldown_left = 0
        self.current = optimizer.lr
        super().__init__(optimizer)

    def value(self, t):
        return self.current

    def improves(self, metric):
        if self.threshold_mode == "rel":
            scale = 1 - self.threshold if self.mode == "min" else 1 + self.threshold
            bound = self.best * scale
        else:
            bound = self.best - self.threshold if self.mode == "min" else self.best + self.threshold
        return metric < bound if self.mode == "min" else metric > bound

    def step(self, metric=None):
        if metric is None:
            raise ValueError("PlateauDecay.step needs the monitored metric")
        metric = float(metric)
        self.t += 1
        if self.improves(metric):
            self.best, self.bad_steps = metric, 0
        else:
            self.bad_steps += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_steps = 0
        if self.bad_steps > self.patience:
            reduced = max(self.current * self.decay, self.min_lr)
            if self.current - reduced > self.eps:
                self.current = reduced
            self.cooldown_left, self.bad_steps = self.cooldown, 0
        self._apply()

    def state_dict(self):
        return {**super().state_dict(), "current": self.current, "best": self.best,
                "bad_steps": self.bad_steps, "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state):
        """As Schedule's; the cuts made so far apply to this schedule's base (the saved lr
        scaled by base / the saved base), never below min_lr."""
        state = saved.checked(state, "schedule PlateauDecay", current=saved.NUMBER,
                              best=saved.NUMBER_OR_INFINITY, bad_steps=saved.COUNT,
                              cooldown_left=saved.COUNT, base=saved.NUMBER)
        cut = float(state["current"]) / state["base"] if state["base"] > 0 else 1.0
        self.current = max(self.base * min(cut, 1.0), self.min_lr)
        self.best = float(state["best"])
        self.bad_steps, self.cooldown_left = state["bad_steps"], state["cooldown_left"]
        super().load_state_dict(state)


class MomentumRamp(Schedule):
    """Momentum rising linearly from `start` to `end` over `steps`, then held (e.g. 0.5 ->
    0.99, Sutskever et al.). Owns the optimizer's `momentum` attribute."""
    attribute = "momentum"

    def __init__(self, optimizer, start=0.5, end=0.99, steps=1000):
        self.start, self.end, self.steps = start, end, steps
        super().__init__(optimizer)

    def value(self, t):
        return self.start + (self.end - self.start) * min(t, self.steps) / self.steps


SCHEDULES = {"constant": Constant, "step": StepDecay, "multistep": MultiStepDecay,
             "exponential": ExponentialDecay, "inverse_time": InverseTimeDecay,
             "cosine": CosineDecay, "plateau": PlateauDecay}
