"""cupyx on the stand-in: pinned (page-locked) host memory, which CuPy returns as a NumPy
array; each allocation is counted in pinned_allocations."""
import numpy as _numpy

from cupy import _counters
from cupy.cuda import _context


def empty_pinned(shape, dtype=float, order="C"):
    """An uninitialised NumPy array in pinned memory."""
    _context.touch()  # cudaHostAlloc
    _counters.record("pinned_allocations")
    return _numpy.empty(shape, dtype, order)
