"""Optimizers on flat buffers, with torch.optim's update rules and defaults.

Every optimizer updates `flat.data` from `flat.grad` in a few whole-buffer operations. On the
CPU a step runs them on one cache-sized slice of the buffers at a time (SLICE_BYTES), so that
its 6-12 passes read memory about once (on the MLP: SGD 7.4 -> 4.8 ms, AdamW 16.5 -> 7.9 ms;
with the `fast` extra SGD with momentum is one compiled pass, 1.3 ms). Weight
decay (L2, added to the gradient as torch does; decoupled in AdamW) and the L1 penalty apply
only where the parameter's `weight_decay` flag is set (not to biases and norm scales/shifts).
Hyper-parameters are plain attributes (`opt.lr`, `opt.momentum`, ...) that schedules change.
"""
import abc
import math

import numpy

from .. import backend
from ..nn import kernels
from .flat import FlatParameters, FlatShard

SLICE_BYTES = 256 * 2**10  # per buffer: a slice of parameters, gradients and state stays in cache


class Optimizer(abc.ABC):
    hyperparameters = ("lr", "weight_decay", "l1")  # saved by state_dict
    decoupled_decay = False  # True: decay the weights directly instead of via the gradient

    def __init__(self, params, lr, weight_decay=0.0, l1=0.0):
        for name, value in (("lr", lr), ("weight_decay", weight_decay), ("l1", l1)):
            if value < 0:
                raise ValueError(f"{type(self).__name__}: {name} must be >= 0, got {value}")
        # a FlatShard: the 1/N of the parameters this rank updates under ZeRO-1
        self.flat = params if isinstance(params, (FlatParameters, FlatShard)) else \
            FlatParameters(params)
        self.lr, self.weight_decay, self.l1 = lr, weight_decay, l1
        self.step_count = 0
        self.buffers = {}  # per-element state, created on first use
        self.part = slice(None)  # the slice of the flat buffers that `update` works on

    def buffers_kept(self):
        """The names of the state buffers a step keeps with these hyper-parameters (a saved
        state after a step holds exactly them)."""
        return set()

    def buffer(self, name, fill=0.0):
        """A per-element state buffer, its slice `part` (all of it outside a step)."""
        if name not in self.buffers:
            xp = backend.get_array_module(self.flat.data)
            self.buffers[name] = xp.full_like(self.flat.data, fill)
        return self.buffers[name][self.part]

    def zero_grad(self):
        self.flat.grad.fill(0)

    def _decayed(self, values):
        """values, zeroed where the parameter is excluded from decay (in place)."""
        if not self.flat.all_decay:
            values *= self.flat.decay_mask[self.part]
        return values

    def penalised_grad(self, l2=True):
        """The gradient plus the gradients of the L2 (when l2) and L1 penalties (of `part`)."""
        xp = backend.get_array_module(self.flat.data)
        p, g = self.flat.data[self.part], self.flat.grad[self.part]
        if not ((l2 and self.weight_decay) or self.l1):
            return g
        penalty = p * self.weight_decay if l2 and self.weight_decay else xp.zeros_like(p)
        if self.l1:
            penalty += self.l1 * xp.sign(p)
        return g + self._decayed(penalty)

    def _slices(self):
        """The slices a step works through: cache-sized on the CPU, the whole buffer on a GPU
        (where every operation is one kernel launch)."""
        size = self.flat.data.size
        if backend.on_gpu(self.flat.data):
            return [slice(None)]
        step = max(1, SLICE_BYTES // self.flat.data.itemsize)
        # at least one, empty or not: `update` creates the state buffers, which every rank
        # must hold (a ZeRO shard may be empty, and its state is gathered collectively)
        return [slice(i, min(i + step, size)) for i in range(0, max(size, 1), step)]

    def step(self):
        self.step_count += 1
        try:
            for self.part in self._slices():
                p = self.flat.data[self.part]
                if self.decoupled_decay and self.weight_decay:
                    p -= self._decayed(p * (self.lr * self.weight_decay))
                self.update(p, self.penalised_grad(l2=not self.decoupled_decay),
                            self.step_count)
        finally:
            self.part = slice(None)

    @abc.abstractmethod
    def update(self, p, g, t):
        """Apply step t (1-based) to the parameters p in place, given the gradient g."""

    def state_dict(self):
        return {"step": self.step_count,
                "hyperparameters": {k: getattr(self, k) for k in self.hyperparameters},
                "buffers": {k: backend.to_host(v).copy() for k, v in self.buffers.items()}}

    def load_state_dict(self, state):
        """Restore a state_dict(), checked first: a saved state names only this optimizer's
        hyper-parameters (numbers or flags, or lists of numbers) and buffers of the parameters' size."""
        hyperparameters, step = state["hyperparameters"], state["step"]
        unknown = sorted(set(hyperparameters) - set(self.hyperparameters))
        if unknown:
            raise ValueError(f"optimizer state names {unknown}, which are not hyper-parameters "
                             f"of {type(self).__name__} ({', '.join(self.hyperparameters)})")
        for name, value in hyperparameters.items():
            numbers = value if isinstance(value, (list, tuple)) else [value]
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
                raise ValueError(f"optimizer hyper-parameter {name} must be a number, got "
                                 f"{str(value)[:40]!r}")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"optimizer step must be a count, got {str(step)[:40]!r}")
        for name, value in state["buffers"].items():
            if value.shape != self.flat.data.shape:
                raise ValueError(f"optimizer state {name!r} holds {value.shape[0]} values but "
                                 f"the model has {self.flat.size} trainable parameters")
        self.step_count = step
        for name, value in hyperparameters.items():
            setattr(self, name, value)
        kept, saved_names = self.buffers_kept(), set(state["buffers"])
        if saved_names - kept or (step and kept - saved_names):
            # a renamed buffer would be dropped, and the state it held (momentum) lost
            raise ValueError(f"optimizer state holds the buffers {sorted(saved_names)}; "
                             f"{type(self).__name__} with its saved hyper-parameters keeps "
                             f"{sorted(kept)} after a step")
        xp = backend.get_array_module(self.flat.data)
        self.buffers = {k: xp.asarray(v, dtype=self.flat.data.dtype)
                        for k, v in state["buffers"].items()}


class SGD(Optimizer):
    """Stochastic gradient descent with (Nesterov) momentum: buf = m buf + g; p -= lr buf
    (or p -= lr (g + m buf) with nesterov), as torch.optim.SGD with dampening 0."""
    hyperparameters = Optimizer.hyperparameters + ("momentum", "nesterov")

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, l1=0.0):
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires momentum > 0")
        super().__init__(params, lr, weight_decay, l1)
        self.momentum, self.nesterov = momentum, nesterov

    def buffers_kept(self):
        return {"momentum_buffer"} if self.momentum else set()

    def step(self):
        flat = self.flat
        if not (self.momentum and not self.decoupled_decay and
                kernels.usable(flat.data, flat.grad, flat.decay_mask)):
            return super().step()
        self.step_count += 1  # the same step in one pass over memory instead of seven
        scalar = flat.data.dtype.type  # float32 arithmetic stays float32, as in NumPy
        _sgd_momentum_kernel(flat.data, flat.grad, self.buffer("momentum_buffer"),
                             flat.decay_mask, scalar(self.weight_decay), scalar(self.l1),
                             scalar(self.lr), scalar(self.momentum), self.nesterov)

    def update(self, p, g, t):
        if self.momentum:
            buf = self.buffer("momentum_buffer")
            buf *= self.momentum
            buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


@kernels.compiled
def _sgd_momentum_kernel(p, g, buf, decay_mask, weight_decay, l1, lr, momentum, nesterov):
    """SGD.step with momentum: penalised_grad and update, element by element."""
    for i in range(p.size):
        penalty = weight_decay * p[i]
        if l1:
            penalty += l1 * numpy.sign(p[i])
        grad = g[i] + penalty * decay_mask[i]
        b = momentum * buf[i] + grad
        buf[i] = b
        p[i] -= lr * (grad + momentum * b if nesterov else b)


class Adagrad(Optimizer):
    """Duchi et al.: sum += g^2; p -= lr_t g / (sqrt(sum) + eps), lr_t = lr / (1 + (t-1) lr_decay)."""
    hyperparameters = Optimizer.hyperparameters + ("lr_decay", "eps")

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, l1=0.0):
        super().__init__(params, lr, weight_decay, l1)
        self.lr_decay, self.eps = lr_decay, eps
        self.buffer("sum", fill=initial_accumulator_value)

    def buffers_kept(self):
        return {"sum"}

    def update(self, p, g, t):
        xp = backend.get_array_module(p)
        total = self.buffer("sum")
        total += g * g
        std = xp.sqrt(total)
        std += self.eps
        p -= (self.lr / (1 + (t - 1) * self.lr_decay)) * g / std


class RMSprop(Optimizer):
    """Tieleman & Hinton: v = a v + (1-a) g^2; p -= lr g / (sqrt(v) + eps); optional momentum
    and centering (subtract the squared running mean of g), as torch.optim.RMSprop."""
    hyperparameters = Optimizer.hyperparameters + ("alpha", "eps", "momentum", "centered")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, l1=0.0):
        super().__init__(params, lr, weight_decay, l1)
        self.alpha, self.eps, self.momentum, self.centered = alpha, eps, momentum, centered

    def buffers_kept(self):
        return {"square_avg"} | ({"grad_avg"} if self.centered else set()) | \
            ({"momentum_buffer"} if self.momentum else set())

    def update(self, p, g, t):
        xp = backend.get_array_module(p)
        square_avg = self.buffer("square_avg")
        square_avg *= self.alpha
        square_avg += (1 - self.alpha) * g * g
        if self.centered:
            grad_avg = self.buffer("grad_avg")
            grad_avg += (1 - self.alpha) * (g - grad_avg)
            avg = xp.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = xp.sqrt(square_avg)
        avg += self.eps
        step = g / avg
        if self.momentum > 0:
            buf = self.buffer("momentum_buffer")
            buf *= self.momentum
            buf += step
            step = buf
        p -= self.lr * step


class Adadelta(Optimizer):
    """Zeiler: v = r v + (1-r) g^2; d = sqrt(u + eps) / sqrt(v + eps) g; u = r u + (1-r) d^2;
    p -= lr d, as torch.optim.Adadelta."""
    hyperparameters = Optimizer.hyperparameters + ("rho", "eps")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, l1=0.0):
        super().__init__(params, lr, weight_decay, l1)
        self.rho, self.eps = rho, eps

    def buffers_kept(self):
        return {"square_avg", "acc_delta"}

    def update(self, p, g, t):
        xp = backend.get_array_module(p)
        square_avg, acc_delta = self.buffer("square_avg"), self.buffer("acc_delta")
        square_avg *= self.rho
        square_avg += (1 - self.rho) * g * g
        delta = xp.sqrt(acc_delta + self.eps)
        delta /= xp.sqrt(square_avg + self.eps)
        delta *= g
        acc_delta *= self.rho
        acc_delta += (1 - self.rho) * delta * delta
        p -= self.lr * delta


class Adam(Optimizer):
    """Kingma & Ba with bias correction (and optional AMSGrad), as torch.optim.Adam:
    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""
    hyperparameters = Optimizer.hyperparameters + ("betas", "eps", "amsgrad")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, l1=0.0):
        super().__init__(params, lr, weight_decay, l1)
        self.betas, self.eps, self.amsgrad = tuple(betas), eps, amsgrad

    def buffers_kept(self):
        return {"exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if self.amsgrad else set())

    def update(self, p, g, t):
        xp = backend.get_array_module(p)
        beta1, beta2 = self.betas
        exp_avg, exp_avg_sq = self.buffer("exp_avg"), self.buffer("exp_avg_sq")
        exp_avg += (1 - beta1) * (g - exp_avg)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * g * g
        if self.amsgrad:
            second = self.buffer("max_exp_avg_sq")
            xp.maximum(second, exp_avg_sq, out=second)
        else:
            second = exp_avg_sq
        denom = xp.sqrt(second)
        denom /= math.sqrt(1 - beta2 ** t)
        denom += self.eps
        p -= (self.lr / (1 - beta1 ** t)) * exp_avg / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p -= lr wd p before the Adam
    step, as torch.optim.AdamW (default weight_decay 1e-2)."""
    decoupled_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, l1=0.0):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, l1)


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adadelta": Adadelta,
              "adam": Adam, "adamw": AdamW}
