"""Running NumPy's code as a CuPy call: the host boundary (a NumPy array where CuPy wants a
device array is refused with CuPy's TypeError), unwrapping stand-in arrays, wrapping results
as CuPy returns them (device arrays, 0-d for reductions), and charging each call its cost
(_costs)."""
import numpy

from cupy import _costs, _names
from cupy.cuda import _context

# NumPy answers these on the host; CuPy returns a 0-d device array.
DEVICE_SCALAR_RESULTS = frozenset({"allclose", "array_equal", "array_equiv", "count_nonzero"})
# NumPy's own objects that CuPy re-exports as they are.
SHARED_CLASSES = (numpy.generic, numpy.dtype, numpy.finfo, numpy.iinfo, BaseException)
# NumPy's versions move data between host memory and files or text without the device
# transfer CuPy makes: the stand-in does not serve them.
HOST_IO = frozenset({"save", "savez", "savez_compressed", "savetxt", "load", "loadtxt",
                     "genfromtxt", "fromfile", "frombuffer", "fromstring", "fromiter",
                     "from_dlpack", "array2string", "array_repr", "array_str"})
_MISSING = object()


def unsupported(value):
    return TypeError(f"Unsupported type {type(value)}")


def is_scalar(value):
    """Python and NumPy scalars, which CuPy accepts wherever it takes an array operand."""
    return isinstance(value, (bool, int, float, complex, numpy.generic))


def _unwrap(value, found):
    from cupy._ndarray import ndarray
    if isinstance(value, ndarray):
        found.append(value)
        return value._array
    if isinstance(value, numpy.ndarray):
        raise unsupported(value)
    if type(value) in (list, tuple):
        return type(value)(_unwrap(item, found) for item in value)
    return value


def wrap(result, inputs=()):
    """NumPy results as CuPy's: arrays (an input itself where NumPy returned it), scalars as
    0-d arrays, sequences of them alike."""
    from cupy._ndarray import ndarray
    if isinstance(result, numpy.ndarray):
        for given in inputs:
            if given._array is result:
                return given
        return ndarray._wrap(result)
    if isinstance(result, numpy.generic):
        return ndarray._wrap(numpy.asarray(result))
    if isinstance(result, (list, tuple)):  # NumPy's named tuples (linalg.qr) are plain in CuPy
        items = [wrap(item, inputs) for item in result]
        return tuple(items) if isinstance(result, tuple) else items
    return result


def call(name, function, args, kwargs=None):
    """function(*args, **kwargs) on the NumPy arrays inside stand-in ones, charged as CuPy's
    `name`; a NumPy array among the arguments raises TypeError."""
    kwargs = kwargs or {}
    inputs = []
    host_args = _unwrap(args, inputs)
    host_kwargs = {key: _unwrap(value, inputs) for key, value in kwargs.items()}
    result = function(*host_args, **host_kwargs)
    if name in DEVICE_SCALAR_RESULTS:
        result = numpy.asarray(result)[()]
    launched = _costs.kernels(name, [a._array for a in inputs], result,
                              kwargs.get("out") is not None)
    if launched:
        _context.launch(launched)
    elif isinstance(result, numpy.ndarray):
        _context.touch()  # an allocation (empty): CUDA starts on the current device
    if _costs.reads_back(name, host_args):
        _context.read_back()
    return wrap(result, inputs)


def device_function(name, function, namespace="cupy"):
    """CuPy's `namespace.name`, run by NumPy's `function`."""
    def run(*args, **kwargs):
        return call(name, function, args, kwargs)
    run.__name__ = run.__qualname__ = name
    run.__module__ = namespace
    run.__doc__ = f"CuPy's {namespace}.{name}, run by NumPy's on the stand-in's arrays."
    return run


def _servable(name, value):
    if name in HOST_IO:
        return False
    if isinstance(value, type):
        return issubclass(value, SHARED_CLASSES)
    return callable(value) or isinstance(value, (int, float, type(None)))  # pi, nan, newaxis


def from_numpy(namespace, name, numpy_module, cache):
    """`namespace.name` served by NumPy's `numpy_module.name`, for a name real CuPy has there
    (AttributeError for the rest, as on a GPU); kept in `cache` (the module's globals)."""
    if name not in _names.listed(namespace):
        raise AttributeError(f"module '{namespace}' has no attribute '{name}'")
    value = getattr(numpy_module, name, _MISSING)
    if value is _MISSING or not _servable(name, value):
        raise AttributeError(f"{namespace}.{name} exists in CuPy but the stand-in does not "
                             "provide it")
    if isinstance(value, numpy.ufunc):
        from cupy._ufunc import ufunc
        value = ufunc(value)
    elif callable(value) and not isinstance(value, type):
        value = device_function(name, value, namespace)
    cache[name] = value
    return value


def served_names(namespace, numpy_module):
    """The listed names of `namespace` that from_numpy serves (for the module's dir())."""
    return sorted(name for name in _names.listed(namespace)
                  if _servable(name, getattr(numpy_module, name, _MISSING)))
