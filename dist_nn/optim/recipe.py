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

and evaluates inside `with recipe.evaluation_weights():` (the EMA weights when enabled).
"""
import contextlib

from .. import nn, saved
from .clip import clip_grad_norm, grad_norm
from .ema import WeightEMA
from .flat import FlatShard
from .scaler import LossScaler


class StepRecipe:
    """`norm()` gives the synchronized gradient's global L2 norm (a GradSync's grad_norm;
    default: that of `optimizer.flat.grad`); for an optimizer whose flat buffer holds only
    this rank's shard of the gradient (ZeRO-1's, on a FlatShard), the shard's part plus one
    allreduce, and `agree` turns this rank's fp16 overflow verdict into every rank's.
    Autocast and the EMA always work on the whole flat buffer: the sharded optimizer's step
    ends with the parameters allgathered."""

    def __init__(self, model, optimizer, amp="off", clip_grad_norm=0.0, ema_decay=0.0,
                 norm=None, agree=None):
        self.optimizer, self.clip, self.agree = optimizer, clip_grad_norm, agree
        self.norm = norm or (lambda: grad_norm(optimizer.flat))
        flat = optimizer.flat.flat if isinstance(optimizer.flat, FlatShard) else optimizer.flat
        self._autocast = nn.amp.Autocast(model, flat, amp) if amp != "off" else None
        self.scaler = LossScaler() if amp == "fp16" else None  # bfloat16 has float32's range
        self.ema = WeightEMA(model, flat, ema_decay) if ema_decay else None
        self.overflow, self.unscaled, self.grad_norm = False, False, None

    def autocast(self):
        return self._autocast() if self._autocast else contextlib.nullcontext()

    def scale(self, loss_grad):
        """The loss gradient times the loss scale (fp16), before backward."""
        return loss_grad * self.scaler.scale if self.scaler else loss_grad

    def unscale(self):
        """After the gradient sync, once per step: unscale the gradients (fp16) and measure
        their global L2 norm before clipping, `grad_norm`, which clipping, the guards and the
        metrics share. True when fp16 overflowed: the step will be skipped (grad_norm None)."""
        self.overflow = bool(self.scaler) and \
            not self.scaler.unscale(self.optimizer.flat, self.agree)
        self.grad_norm = None if self.overflow else self.norm()
        self.unscaled = True
        return self.overflow

    def step(self):
        """Clip, take the optimizer step unless unscale() found an overflow, update the loss
        scale and the EMA; returns the step's grad_norm (None for a skipped step)."""
        if not self.unscaled:
            self.unscale()
        norm = self.grad_norm
        if norm is not None and self.clip:
            clip_grad_norm(self.optimizer.flat, self.clip, total=norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema and not self.overflow:
            self.ema.update()
        self.overflow, self.unscaled = False, False
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
