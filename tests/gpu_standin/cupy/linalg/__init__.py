"""cupy.linalg on the stand-in: NumPy's functions, for the names real CuPy's module has."""
import numpy as _numpy

from cupy import _dispatch


def __getattr__(name):
    return _dispatch.from_numpy("cupy.linalg", name, _numpy.linalg, globals())


def __dir__():
    return _dispatch.served_names("cupy.linalg", _numpy.linalg)
