"""Optional compiled CPU kernels (the `fast` extra: numba).

A layer whose NumPy formula takes many passes over memory may carry a compiled kernel beside
it, decorated with `compiled`, and call it when `usable(*arrays)`: numba imported, kernels
switched on, and every array a NumPy array of float32 or float64 (anything else, e.g. CuPy,
float16 or bfloat16, takes the NumPy formula). Tests hold the two paths equal.

DIST_NN_KERNELS=0 (read at import) or `use(False)` switches the kernels off.
"""
import contextlib
import os

import numpy

try:
    import numba
except ImportError:  # the extra is optional: every layer has its NumPy formula
    numba = None

_enabled = numba is not None and os.environ.get("DIST_NN_KERNELS", "1") != "0"
_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def compiled(function):
    """numba.njit (cached on disk) when numba is installed; else the plain function, which
    `usable` never lets run. Sums may be reassociated (so that they vectorise); no other
    fast-math assumption is made: NaN and Inf propagate as in NumPy."""
    if numba is None:
        return function
    return numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})(function)


def use(enabled):
    """Switch the compiled kernels on (when numba is installed) or off."""
    global _enabled
    _enabled = bool(enabled) and numba is not None


@contextlib.contextmanager
def using(enabled):
    saved = _enabled
    use(enabled)
    try:
        yield
    finally:
        globals()["_enabled"] = saved


def usable(*arrays):
    """True when the compiled kernels may take these arrays."""
    return _enabled and all(isinstance(a, numpy.ndarray) and a.dtype in _DTYPES
                            and a.dtype == arrays[0].dtype for a in arrays)


def status():
    if numba is None:
        return "off (numba not installed)"
    return f"numba {numba.__version__}" if _enabled else "off (DIST_NN_KERNELS=0)"
