"""One training step's recipe around the optimizer: mixed precision (nn.amp.Autocast, and a
LossScaler for fp16), gradient clipping and a weight EMA, each off unless asked for. A loop
(the Trainer's, or a hand-written one) calls, per step:

    with recipe.autocast():                        # each micro-batch's forward and backward
        loss = loss_fn.forward(model.forward(x), y)
        model.backward(recipe.scale(loss_fn.backward()))
    sync.wait()                                    # the synchronized gradient: every rank
    overflow = recipe.unscale()                    # decides alike; True: fp16 overflow, the
    ...guards read recipe.grad_norm...             # step will be skipped (grad_norm None)
    grad_norm = recipe.step()                      # clip, step (unless skipped), EMA update

On a GPU the gradient norm is a value read back from the device (a host sync): the Trainer
calls `unscale(defer=True)`, reads `recipe.pending_norm` in the same copy as the step's loss
and accuracy, and hands it to `conclude()`.

and evaluates inside `with recipe.evaluation_weights():` (the EMA weights when enabled).
"""
import contextlib
import math

from .. import nn, saved
from . import clip
from .ema import WeightEMA
from .flat import FlatShard
from .scaler import LossScaler


class StepRecipe:
    """`squared_norm()` gives the synchronized gradient's squared global L2 norm as a 0-d
    array (a GradSync's squared_grad_norm; default: that of `optimizer.flat.grad`); for an
    optimizer whose flat buffer holds only this rank's shard of the gradient (ZeRO-1's, on a
    FlatShard), the shard's part plus one allreduce. It is finite exactly when every gradient
    is: fp16's overflow verdict, the same on every rank. Autocast and the EMA always work on
    the whole flat buffer: the sharded optimizer's step ends with the parameters
    allgathered."""

    def __init__(self, model, optimizer, amp="off", clip_grad_norm=0.0, ema_decay=0.0,
                 squared_norm=None, skip_overflow=False):
        self.optimizer, self.max_norm = optimizer, clip_grad_norm
        self._measure = squared_norm or (lambda: clip.squared_norm(optimizer.flat.grad))
        flat = optimizer.flat.flat if isinstance(optimizer.flat, FlatShard) else optimizer.flat
        self._autocast = nn.amp.Autocast(model, flat, amp) if amp != "off" else None
        self.scaler = LossScaler() if amp == "fp16" else None  # bfloat16 has float32's range
        # an fp16-compressed gradient sum can overflow too: that step is skipped as well
        self.skip_overflow = skip_overflow or self.scaler is not None
        self.skipped = self.overflow_streak = 0  # steps skipped; of them, the latest in a row
        self.ema = WeightEMA(model, flat, ema_decay) if ema_decay else None
        self.overflow, self.grad_norm, self.pending_norm = False, None, None
        self.unscaled = self.concluded = False

    def autocast(self):
        return self._autocast() if self._autocast else contextlib.nullcontext()

    def scale(self, loss_grad):
        """The loss gradient times the loss scale (fp16), before backward."""
        return loss_grad * self.scaler.scale if self.scaler else loss_grad

    def unscale(self, defer=False):
        """After the gradient sync, once per step: unscale the gradients (fp16) and measure
        their global L2 norm before clipping, `grad_norm`, which clipping, the guards and the
        metrics share. True when fp16 overflowed: the step will be skipped (grad_norm None).
        defer=True: only start the measurement (`pending_norm`, the squared norm as a 0-d
        array) and return None; conclude() takes it once read."""
        if self.scaler:
            self.scaler.divide(self.optimizer.flat)
        self.pending_norm, self.unscaled = self._measure(), True
        return None if defer else self.conclude()

    def conclude(self, squared_norm=None):
        """The step's verdict from the squared norm read on the host (default: read
        `pending_norm` now): sets grad_norm and overflow; returns overflow."""
        squared = float(self.pending_norm if squared_norm is None else squared_norm)
        finite = math.isfinite(squared)
        if self.scaler:
            self.scaler.record(finite)
        self.overflow = self.skip_overflow and not finite
        self.skipped += self.overflow
        self.overflow_streak = self.overflow_streak + 1 if self.overflow else 0
        self.grad_norm = None if self.overflow else math.sqrt(squared)
        self.concluded = True
        return self.overflow

    def step(self):
        """Clip, take the optimizer step unless unscale() found an overflow, update the loss
        scale and the EMA; returns the step's grad_norm (None for a skipped step)."""
        if not self.unscaled:
            self.unscale()
        if not self.concluded:
            self.conclude()
        norm = self.grad_norm
        if norm is not None and self.max_norm:
            clip.clip_grad_norm(self.optimizer.flat, self.max_norm, total=norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif not self.overflow:
            self.optimizer.step()
        if self.ema and not self.overflow:
            self.ema.update()
        self.overflow, self.unscaled, self.concluded = False, False, False
        return norm

    def evaluation_weights(self):
        """A with-block in which the model holds the weights to evaluate: the EMA's when
        enabled, its own otherwise."""
        return self.ema.applied() if self.ema else contextlib.nullcontext()

    def state_dict(self):
        """The loss scaler's state (JSON-able); the EMA's arrays are ema.state_dict()."""
        return {"scaler": self.scaler.state_dict() if self.scaler else None}

    def load_state_dict(self, state, ema_state=None):
        """The state_dict() and the EMA's arrays of a checkpoint; an EMA the checkpoint lacks
        (it was off) starts from the model's current weights."""
        state = saved.checked(state, "recipe", scaler=saved.OBJECT_OR_NONE)
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema and ema_state is not None:
            self.ema.load_state_dict(ema_state)
        elif self.ema:
            self.ema.reset()
