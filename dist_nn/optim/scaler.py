"""Dynamic loss scaling for float16 training, with torch.amp.GradScaler's rules and defaults.

The loss gradient is multiplied by `scale` before backward, so that small gradients do not
underflow in float16; the gradients are divided by it again before the optimizer step. When
any gradient is Inf/NaN the step is skipped and the scale halved; after `growth_interval`
clean steps in a row it doubles. A hand-written loop:

    scaler = LossScaler()
    with autocast():
        logits = model.forward(x)
        loss = loss_fn.forward(logits, y)
        model.backward(loss_fn.backward() * scaler.scale)
    sync.wait()                     # the decision below is taken on the synchronized
    if scaler.unscale(opt.flat):    # gradient, so every rank skips the same steps
        clip_grad_norm(opt.flat, 1.0)
    stepped = scaler.step(opt)      # False: an overflow step, skipped
    scaler.update()
"""
import numpy

from .. import backend, saved
from .flat import FlatParameters, FlatShard


class LossScaler:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000):
        if not (init_scale > 0 and growth_factor > 1 and 0 < backoff_factor < 1
                and growth_interval >= 1):
            raise ValueError("LossScaler needs init_scale > 0, growth_factor > 1, "
                             "0 < backoff_factor < 1 and growth_interval >= 1")
        self.scale = self._float32(init_scale)  # GradScaler keeps its scale in float32
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.growth_tracker = 0  # clean steps since the last change of scale
        self.skipped = 0         # steps skipped so far (not saved: a count for the log)
        self.finite = None       # this step's verdict, once unscale() has run
        self._divided = False    # divide() ran this step, record() not yet

    @staticmethod
    def _float32(value):
        with numpy.errstate(over="ignore"):  # a scale grown past float32's range: Inf
            return float(numpy.float32(value))

    def unscale(self, flat_or_params, agree=None):
        """Divide the gradients by the scale in place (once per step); True when all of
        them are finite. `agree`: a function turning this process's verdict into every
        rank's, for gradients each rank holds a part of (a ZeRO-1 shard). On a GPU each
        array's verdict is a host sync: StepRecipe instead divides, then records the verdict
        it reads from the gradient norm."""
        grads = self.divide(flat_or_params)
        finite = all(bool(backend.get_array_module(g).isfinite(g).all()) for g in grads)
        return self.record(agree(finite) if agree else finite)

    def divide(self, flat_or_params):
        """Divide the gradients by the scale in place, once per step; returns them. The
        step's verdict is then given to record()."""
        if self.finite is not None or self._divided:
            raise RuntimeError("unscale() was already called this step; call update() first")
        grads = [flat_or_params.grad] if isinstance(flat_or_params, (FlatParameters, FlatShard)) \
            else [p.grad for p in flat_or_params if p.requires_grad]
        inverse = self._float32(1.0 / self.scale)  # torch: the float64 reciprocal, in float32
        for g in grads:
            g *= inverse
        self._divided = True
        return grads

    def record(self, finite):
        """This step's verdict, taken after divide(): True when every gradient is finite (the
        same on every rank); returns it."""
        self.finite, self._divided = bool(finite), False
        return self.finite

    def step(self, optimizer):
        """optimizer.step() unless a gradient is Inf/NaN (unscaling first if not done);
        True when the step was taken, False when it was skipped."""
        if self.finite is None:
            self.unscale(optimizer.flat)
        if self.finite:
            optimizer.step()
        else:
            self.skipped += 1
        return self.finite

    def update(self):
        """Adjust the scale after this step's verdict: halve on Inf/NaN, double after
        growth_interval clean steps."""
        if self.finite is None:
            raise RuntimeError("update() needs unscale() or step() first in this step")
        if not self.finite:
            self.scale = self._float32(self.scale * self.backoff_factor)
            self.growth_tracker = 0
        elif self.growth_tracker + 1 == self.growth_interval:
            grown = self._float32(self.scale * self.growth_factor)
            self.scale = grown if numpy.isfinite(grown) else self.scale
            self.growth_tracker = 0
        else:
            self.growth_tracker += 1
        self.finite = None

    def state_dict(self):
        return {"scale": self.scale, "growth_tracker": self.growth_tracker}

    def load_state_dict(self, state):
        state = saved.checked(state, "loss scaler", scale=saved.POSITIVE,
                              growth_tracker=saved.COUNT)
        self.scale = self._float32(state["scale"])
        self.growth_tracker = state["growth_tracker"]
