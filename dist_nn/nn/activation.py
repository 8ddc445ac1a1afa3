"""Element-wise activations (shapes are preserved): ReLU, LeakyReLU, PReLU, ELU, Sigmoid, Tanh.
Each caches what its derivative needs: the output where the derivative is a function of it."""
from .. import backend
from .module import Module, Parameter


class ReLU(Module):
    def forward(self, x):
        xp = backend.get_array_module(x)
        self.positive = x > 0
        return xp.maximum(x, 0)

    def backward(self, dy):
        return dy * self.positive


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.positive = x > 0
        return xp.where(self.positive, x, x * self.negative_slope)

    def backward(self, dy):
        xp = backend.get_array_module(dy)
        return xp.where(self.positive, dy, dy * self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class PReLU(Module):
    """LeakyReLU with a learned slope: one shared (num_parameters=1) or one per channel
    (dim 1). weight: (num_parameters,), initialised to `init`, never weight-decayed
    (decay would pull it toward a plain ReLU), as He et al. advise."""

    def __init__(self, num_parameters=1, init=0.25):
        super().__init__()
        self.num_parameters = num_parameters
        self.weight = Parameter(backend.xp.full(num_parameters, init, dtype=backend.float_dtype),
                                weight_decay=False)

    def _slope(self, x):
        if self.num_parameters == 1:
            return self.weight.data.reshape((1,) * x.ndim)
        if x.ndim < 2 or x.shape[1] != self.num_parameters:
            raise ValueError(f"PReLU({self.num_parameters}) expects {self.num_parameters} "
                             f"channels in dim 1, got shape {tuple(x.shape)}")
        return self.weight.data.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.x = x
        self.positive = x > 0
        return xp.where(self.positive, x, x * self._slope(x))

    def backward(self, dy):
        xp = backend.get_array_module(dy)
        dslope = xp.where(self.positive, 0, dy * self.x)
        if self.num_parameters == 1:
            self.weight.grad += dslope.sum()
        else:
            self.weight.grad += dslope.sum(axis=tuple(a for a in range(dy.ndim) if a != 1))
        return xp.where(self.positive, dy, dy * self._slope(dy))

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class ELU(Module):
    """x if x > 0 else alpha * (exp(x) - 1)."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.positive = x > 0
        # exp of the negative part only: no overflow warnings for large positive x
        self.y = xp.where(self.positive, x, self.alpha * xp.expm1(xp.minimum(x, 0)))
        return self.y

    def backward(self, dy):
        xp = backend.get_array_module(dy)
        return xp.where(self.positive, dy, dy * (self.y + self.alpha))

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Sigmoid(Module):
    def forward(self, x):
        xp = backend.get_array_module(x)
        # 1 / (1 + exp(-x)) overflows for very negative x; tanh form is stable everywhere
        self.y = 0.5 * (xp.tanh(0.5 * x) + 1.0)
        return self.y

    def backward(self, dy):
        return dy * self.y * (1.0 - self.y)


class Tanh(Module):
    def forward(self, x):
        xp = backend.get_array_module(x)
        self.y = xp.tanh(x)
        return self.y

    def backward(self, dy):
        return dy * (1.0 - self.y * self.y)
