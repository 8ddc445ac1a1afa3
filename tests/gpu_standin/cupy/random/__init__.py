"""cupy.random on the stand-in: default_rng, the bit generators (XORWOW, MRG32k3a,
Philox4x3210) and the Generator methods real CuPy's Generator has (a subset of NumPy's),
drawing from a NumPy Generator seeded alike: values differ from CuPy's, determinism is kept.
Each draw is one kernel. Each bit generator is counted in generators_created (CuPy sets up its
states on the device), XORWOW's and MRG32k3a's also in slow_generator_setups: cuRAND skips
each of their states ahead to its own subsequence, a cost that grows with the state count
(tens of ms), where Philox's counter-based states are set up in O(1)."""
import numpy as _numpy

from cupy import _counters, _dispatch, _names
from cupy.cuda import _context

# NumPy's methods of these names take no dtype: draw, then write it as a kernel would.
_CAST_AFTER = frozenset({"beta", "uniform"})


class BitGenerator:
    """The states of one of cuRAND's generators on the device."""
    _SLOW_SETUP = False

    def __init__(self, seed=None):
        _context.touch()
        _counters.record("generators_created")
        if self._SLOW_SETUP:
            _counters.record("slow_generator_setups")
        self._numpy = _numpy.random.default_rng(seed)


class XORWOW(BitGenerator):
    _SLOW_SETUP = True


class MRG32k3a(BitGenerator):
    _SLOW_SETUP = True


class Philox4x3210(BitGenerator):
    pass


class Generator:
    """A random generator on the device, drawing from `bit_generator`."""

    def __init__(self, bit_generator):
        if not isinstance(bit_generator, BitGenerator):
            raise TypeError("Generator takes a cupy.random BitGenerator")
        self._generator = bit_generator._numpy


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
    """A Generator on XORWOW seeded by `seed` (None, an int, a SeedSequence; a Generator as
    it is), as CuPy's."""
    if isinstance(seed, Generator):
        return seed
    return Generator(XORWOW(seed))
