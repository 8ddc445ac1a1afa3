"""Crossing the host boundary on purpose: array creation from host data (an upload, counted),
asnumpy (a read back, counted), and get_array_module."""
import numpy

from cupy import _dispatch
from cupy._ndarray import ndarray
from cupy.cuda import _context


def _on_device(a):
    """A device array, or a sequence holding them (CuPy builds the array on the device)."""
    if type(a) in (list, tuple):
        return any(_on_device(item) for item in a)
    return isinstance(a, ndarray)


def _from_host_or_device(name, numpy_function):
    """CuPy's `name`: on a device array, a device call (a no-op where nothing changes); on
    host data, an upload of a copy."""
    def create(a, *args, **kwargs):
        if _on_device(a):
            return _dispatch.call(name, numpy_function, (a, *args), kwargs)
        host = numpy.array(numpy_function(a, *args, **kwargs), copy=True)
        if host.dtype == object:
            raise ValueError("Unsupported dtype object")
        _context.upload()
        return ndarray._wrap(host)
    create.__name__ = create.__qualname__ = name
    return create


array = _from_host_or_device("array", numpy.array)
asarray = _from_host_or_device("asarray", numpy.asarray)
asanyarray = _from_host_or_device("asanyarray", numpy.asarray)
ascontiguousarray = _from_host_or_device("ascontiguousarray", numpy.ascontiguousarray)
asfortranarray = _from_host_or_device("asfortranarray", numpy.asfortranarray)


def asnumpy(a, stream=None, order="C", out=None):
    """A NumPy array of `a`: a device array's values read back (a sync), host data as is."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    if out is None:
        return numpy.asarray(a, order=order)
    out[...] = a
    return out


def get_array_module(*args):
    """cupy where any argument is a device array, else numpy."""
    import cupy
    return cupy if any(isinstance(a, ndarray) for a in args) else numpy
