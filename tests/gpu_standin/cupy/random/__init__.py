"""cupy.random on the stand-in: default_rng and the Generator methods real CuPy's Generator
has (a subset of NumPy's), drawing from a NumPy Generator seeded alike: values differ from
CuPy's, determinism is kept. Each draw is one kernel; each default_rng is counted in
generators_created (CuPy sets up its generator state on the device)."""
import numpy as _numpy

from cupy import _counters, _dispatch, _names
from cupy.cuda import _context

# NumPy's methods of these names take no dtype: draw, then write it as a kernel would.
_CAST_AFTER = frozenset({"beta", "uniform"})


class Generator:
    """A random generator on the device (made by default_rng)."""

    def __init__(self, numpy_generator):
        self._generator = numpy_generator


def _draw(name):
    def numpy_draw(generator, *args, **kwargs):
        dtype = kwargs.pop("dtype", None) if name in _CAST_AFTER else None
        return _numpy.asarray(getattr(generator, name)(*args, **kwargs), dtype=dtype)

    def draw(self, *args, **kwargs):
        return _dispatch.call(f"random.{name}", numpy_draw, (self._generator, *args), kwargs)
    draw.__name__ = draw.__qualname__ = name
    return draw


for _name in _names.listed("cupy.random.Generator"):
    setattr(Generator, _name, _draw(_name))


def default_rng(seed=None):
    """A Generator seeded by `seed` (None, an int, a SeedSequence; a Generator as it is)."""
    if isinstance(seed, Generator):
        return seed
    _context.touch()
    _counters.record("generators_created")
    return Generator(_numpy.random.default_rng(seed))
