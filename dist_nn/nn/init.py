"""Weight initialisers.

Linear and Conv2d take PyTorch's default ("pytorch": weight and bias uniform in
+-1/sqrt(fan_in)) unless told otherwise; the course's choices are "he", "xavier" and
"normal" (0.01-Gaussian), with zero biases. Each scheme draws a host array from the seeded "init" stream (shared by all ranks, and the
same on CPU and GPU for a given seed) and moves it to the device. Fans follow PyTorch:
fan_in = in_features * receptive field, fan_out = out_features * receptive field.
All-zero weights are refused: every unit of a layer would compute the same function and
receive the same gradient forever (the symmetry is never broken).
"""
import math

from .. import backend


def fans(shape):
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel)."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight of at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _init_stream():
    return backend.generator("init", per_rank=False, on_device=False)


def pytorch(shape):
    """PyTorch's default for Linear and Conv2d weights (kaiming_uniform_ with a = sqrt(5)):
    U(-b, b), b = 1 / sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fans(shape)[0])
    return _init_stream().uniform(-bound, bound, shape)


def normal(shape, std=0.01):
    """N(0, std^2): the small-random-numbers init (fine for shallow nets only)."""
    return _init_stream().normal(0.0, std, shape)


def xavier(shape, gain=1.0):
    """Glorot & Bengio: Var = gain^2 * 2 / (fan_in + fan_out) (torch's xavier_normal_)."""
    fan_in, fan_out = fans(shape)
    return normal(shape, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def he(shape, negative_slope=0.0):
    """He et al. for (leaky) ReLU: Var = 2 / ((1 + a^2) fan_in) (torch's kaiming_normal_)."""
    fan_in, _ = fans(shape)
    return normal(shape, math.sqrt(2.0 / ((1.0 + negative_slope ** 2) * fan_in)))


def zeros(shape):
    """For biases and shifts only (see `weight`)."""
    return backend.xp.zeros(shape, dtype=backend.float_dtype)


TRAINING_COPIES = 4  # a weight, its gradient and an optimizer's two moments

SCHEMES = {"pytorch": pytorch, "normal": normal, "xavier": xavier, "he": he}


def bias(weight_shape, scheme="pytorch"):
    """The bias of a layer whose weight has `weight_shape`, drawn after the weight as PyTorch
    does: U(-b, b), b = 1 / sqrt(fan_in) for "pytorch"; zeros for the other schemes."""
    if scheme != "pytorch":
        return zeros(weight_shape[0])
    bound = 1.0 / math.sqrt(fans(weight_shape)[0])
    values = _init_stream().uniform(-bound, bound, weight_shape[0])
    return backend.to_device(values, dtype=backend.float_dtype)


def weight(shape, scheme="pytorch"):
    """A device weight array of `shape` drawn by `scheme` (a name in SCHEMES or a callable
    `scheme(shape) -> array`), in the backend's float dtype. All-zero results are refused."""
    need = TRAINING_COPIES * math.prod(shape) * backend.float_dtype().itemsize
    free = backend.free_memory()
    if need > free:  # refused before it is drawn, not killed while drawn
        raise ValueError(f"a weight of shape {tuple(shape)} needs {need / 2**30:.1f} GiB with "
                         f"its gradient and optimizer state, more than the "
                         f"{free / 2**30:.1f} GiB free: make the model smaller")
    if isinstance(scheme, str):
        if scheme not in SCHEMES:
            raise ValueError(f"unknown init {scheme!r}; choose one of {sorted(SCHEMES)} "
                             "('zeros' is for biases only: zero weights never break symmetry)")
        scheme = SCHEMES[scheme]
    values = backend.to_host(scheme(tuple(shape)))
    if values.shape != tuple(shape):
        raise ValueError(f"init returned shape {values.shape}, expected {tuple(shape)}")
    if not values.any():
        raise ValueError("refusing all-zero weight init: every unit would stay identical "
                         "(symmetry is never broken); use a random init for weights")
    return backend.to_device(values, dtype=backend.float_dtype)
