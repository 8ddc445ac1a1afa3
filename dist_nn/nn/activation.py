"""Element-wise activations (shapes are preserved): ReLU, LeakyReLU, PReLU, ELU, Sigmoid, Tanh.
Each keeps what its derivative needs (nothing inside no_grad()): the output where the derivative
is a function of it (ReLU, Sigmoid, Tanh), else the local slope. Selections are written as arithmetic on 0/1 masks, not `where`, which NumPy
runs ~20x slower than a multiply."""
from .. import backend
from .module import Module, Parameter


class ReLU(Module):
    """max(x, 0). Its mask comes from its output, which the next layer keeps anyway.
    `fused`: the BatchNorm before it applies it (batchnorm.fuse_relu), so this passes through."""

    fused = False

    def forward(self, x):
        if self.fused:
            return x
        xp = backend.get_array_module(x)
        y = xp.maximum(x, 0)
        self.keep(y=y)
        return y

    def backward(self, dy):
        return dy if self.fused else dy * (self.kept(self.y) > 0)

    def extra_repr(self):
        return "fused into the BatchNorm before it" if self.fused else ""


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        slope = leaky_slope(x, self.negative_slope)
        self.keep(slope=slope)
        return x * slope

    def backward(self, dy):
        return dy * self.kept(self.slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


def leaky_slope(x, negative_slope):
    """The local derivative of a leaky ReLU: 1 where x > 0, negative_slope (a number or an
    array broadcasting against x) elsewhere."""
    slope = (x > 0).astype(x.dtype)
    slope *= 1 - negative_slope
    slope += negative_slope
    return slope


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
        slope = leaky_slope(x, self._slope(x))
        self.keep(negative_part=xp.minimum(x, 0), slope=slope)
        return x * slope

    def backward(self, dy):
        dslope = dy * self.kept(self.negative_part)
        if self.num_parameters == 1:
            self.weight.grad += dslope.sum()
        else:
            self.weight.grad += dslope.sum(axis=tuple(a for a in range(dy.ndim) if a != 1))
        return dy * self.slope

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class ELU(Module):
    """x if x > 0 else alpha * (exp(x) - 1)."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        xp = backend.get_array_module(x)
        negative_part = xp.minimum(x, 0)  # exp of it never overflows
        expm1 = xp.expm1(negative_part)
        self.keep(slope=leaky_slope(x, self.alpha * (expm1 + 1)))  # 1, or alpha exp(x)
        return (x - negative_part) + self.alpha * expm1

    def backward(self, dy):
        return dy * self.kept(self.slope)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Sigmoid(Module):
    def forward(self, x):
        xp = backend.get_array_module(x)
        # 1 / (1 + exp(-x)) overflows for very negative x. With e = exp(-|x|), which never
        # does, sigmoid is 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0: the latter keeps
        # full relative precision where 1 - sigmoid(|x|) would cancel.
        e = xp.exp(-xp.abs(x))
        negative = (x < 0).astype(x.dtype)
        numerator = e * negative
        numerator += 1 - negative
        y = numerator / (1 + e)
        self.keep(y=y)
        return y

    def backward(self, dy):
        y = self.kept(self.y)
        return dy * y * (1.0 - y)


class Tanh(Module):
    def forward(self, x):
        xp = backend.get_array_module(x)
        y = xp.tanh(x)
        self.keep(y=y)
        return y

    def backward(self, dy):
        y = self.kept(self.y)
        return dy * (1.0 - y * y)
