"""cupy.ndarray: a NumPy array standing for device memory. Views share memory as CuPy's do;
the host boundary is CuPy's (no implicit conversion to NumPy, no NumPy operands); every read
on the host is a counted sync (_read_back) and every call is charged by _costs through
_dispatch."""
import inspect
import operator

import numpy

from cupy import _dispatch, _names
from cupy.cuda import _context, runtime

IMPLICIT_CONVERSION = ("Implicit conversion to a NumPy array is not allowed. Please use "
                       "`.get()` to construct a NumPy array explicitly.")


class Flags:
    """CuPy's array flags."""
    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, numpy_flags):
        self.c_contiguous = numpy_flags.c_contiguous
        self.f_contiguous = numpy_flags.f_contiguous
        self.owndata = numpy_flags.owndata

    def __getitem__(self, name):
        return getattr(self, name.lower())

    def __repr__(self):
        return "\n".join(f"  {name.upper()} : {getattr(self, name)}" for name in self.__slots__)


class ndarray:
    """A device array; `cupy.ndarray(shape, dtype)` allocates one (uninitialised)."""
    __slots__ = ("_array", "_device_id", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, order="C"):
        _context.touch()
        self._array = numpy.empty(shape, dtype, order=order)
        self._device_id = _context.current_device_id()

    @classmethod
    def _wrap(cls, array):
        wrapped = object.__new__(cls)
        wrapped._array, wrapped._device_id = array, _context.current_device_id()
        return wrapped

    # --- what an attribute read tells, without touching the values --------------------
    shape = property(lambda self: self._array.shape)
    dtype = property(lambda self: self._array.dtype)
    ndim = property(lambda self: self._array.ndim)
    size = property(lambda self: self._array.size)
    itemsize = property(lambda self: self._array.itemsize)
    nbytes = property(lambda self: self._array.nbytes)
    strides = property(lambda self: self._array.strides)
    flags = property(lambda self: Flags(self._array.flags))
    T = property(lambda self: self.transpose())
    mT = property(lambda self: _dispatch.call("mT", operator.attrgetter("mT"), (self,)))
    real = property(lambda self: _dispatch.call("real", numpy.real, (self,)))
    imag = property(lambda self: _dispatch.call("imag", numpy.imag, (self,)))
    device = property(lambda self: _context.Device(self._device_id))

    @property
    def base(self):
        base = self._array.base
        return ndarray._wrap(base) if isinstance(base, numpy.ndarray) else None

    @property
    def data(self):
        return _context.MemoryPointer(self._array.__array_interface__["data"][0],
                                      self._device_id)

    @property
    def __cuda_array_interface__(self):
        """What CUDA-aware libraries (mpi4py) read to use the memory in place."""
        _context.check_handoff()
        stream = _context.get_current_stream().ptr or runtime.streamLegacy
        return {"shape": self.shape, "typestr": self.dtype.str, "descr": self.dtype.descr,
                "data": (self.data.ptr if self.size else 0, False), "version": 3,
                "strides": None if self._array.flags.c_contiguous else self.strides,
                "stream": stream}

    # --- the host boundary ----------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_CONVERSION)

    def _read_back(self, stream=None):
        """The values, read on the host: a device-to-host copy the host waits for."""
        _context.wait_for([stream or _context.get_current_stream()])
        return self._array

    def get(self, stream=None, order="C", out=None):
        """A NumPy copy (into `out`, a host array, if given)."""
        if out is None:
            return numpy.array(self._read_back(stream), order=order)
        if not isinstance(out, numpy.ndarray):
            raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
        if out.dtype != self.dtype:
            raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
        if out.shape != self.shape:
            raise ValueError(f"Shape mismatch. Expected shape: {self.shape}, "
                             f"actual shape: {out.shape}")
        if not (out.flags.c_contiguous or out.flags.f_contiguous):
            raise RuntimeError("`out` cannot be specified when copying to non-contiguous "
                               "ndarray")
        if not (out.flags.c_contiguous and self._array.flags.c_contiguous
                or out.flags.f_contiguous and self._array.flags.f_contiguous):
            _context.launch()  # CuPy first copies the array into out's layout on the device
        out[...] = self._read_back(stream)
        return out

    def set(self, arr, stream=None):
        """Copy the host array `arr` (same shape and dtype) into this one: an upload."""
        if not isinstance(arr, numpy.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if not (self._array.flags.c_contiguous or self._array.flags.f_contiguous):
            raise RuntimeError("Cannot set to non-contiguous array")
        _context.upload()
        self._array[...] = arr

    def item(self, *args):
        return self._read_back().item(*args)

    def tolist(self):
        return self._read_back().tolist()

    def __float__(self):
        return float(self._read_back())

    def __int__(self):
        return int(self._read_back())

    def __complex__(self):
        return complex(self._read_back())

    def __index__(self):
        return operator.index(self._read_back())

    def __bool__(self):
        return bool(self._read_back())

    def __format__(self, spec):
        return format(self._read_back(), spec)

    def __repr__(self):
        return repr(self._read_back())

    def __str__(self):
        return str(self._read_back())

    def __reduce__(self):
        from cupy._host import array
        return array, (self.get(),)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # --- sequence protocol and indexing ----------------------------------------------------
    def __len__(self):
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    @staticmethod
    def _device_index(key):
        """`key` with what CuPy uploads uploaded (NumPy arrays, lists), and a trailing Ellipsis
        so that integers select 0-d views, as in CuPy, not NumPy scalars."""
        from cupy._host import asarray
        key = key if isinstance(key, tuple) else (key,)
        key = tuple(asarray(k) if isinstance(k, (numpy.ndarray, list)) else k for k in key)
        return key if any(k is Ellipsis for k in key) else key + (Ellipsis,)

    def __getitem__(self, key):
        return _dispatch.call("getitem", operator.getitem, (self, self._device_index(key)))

    def __setitem__(self, key, value):
        if isinstance(value, numpy.ndarray):  # CuPy fills from it: a scalar only
            if value.ndim:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value[()]
        elif not (isinstance(value, ndarray) or _dispatch.is_scalar(value)):
            raise _dispatch.unsupported(value)
        _dispatch.call("setitem", operator.setitem, (self, self._device_index(key), value))

    # --- NumPy's protocols: NumPy functions on device arrays run CuPy's ---------------------
    def __array_ufunc__(self, numpy_ufunc, method, *inputs, **kwargs):
        import cupy
        try:
            cupy_ufunc = getattr(cupy, numpy_ufunc.__name__)
            run = cupy_ufunc if method == "__call__" else getattr(cupy_ufunc, method)
        except AttributeError:
            return NotImplemented
        return run(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        import cupy
        module = cupy
        try:  # numpy.linalg.norm -> cupy.linalg.norm, as CuPy resolves it
            for part in func.__module__.split(".")[1:]:
                module = getattr(module, part)
            cupy_func = getattr(module, func.__name__)
        except AttributeError:
            return NotImplemented
        return cupy_func(*args, **kwargs)


# Operators are CuPy's ufuncs: x + y is cupy.add(x, y), x += y is cupy.add(x, y, out=x).
_BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
           "floordiv": "floor_divide", "mod": "remainder", "pow": "power", "matmul": "matmul",
           "and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor",
           "lshift": "left_shift", "rshift": "right_shift"}
_COMPARISONS = {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
                "eq": "equal", "ne": "not_equal"}
_UNARY = {"neg": "negative", "pos": "positive", "abs": "absolute", "invert": "invert"}


def _ufunc(name):
    import cupy
    return getattr(cupy, name)


def _operators():
    for op, name in {**_BINARY, **_COMPARISONS, "divmod": "divmod"}.items():
        yield f"__{op}__", lambda self, other, name=name: _ufunc(name)(self, other)
    for op, name in {**_BINARY, "divmod": "divmod"}.items():
        yield f"__r{op}__", lambda self, other, name=name: _ufunc(name)(other, self)
    for op, name in _BINARY.items():
        yield f"__i{op}__", lambda self, other, name=name: _ufunc(name)(self, other, out=self)
    for op, name in _UNARY.items():
        yield f"__{op}__", lambda self, name=name: _ufunc(name)(self)


# Methods that read the array on the host (CuPy gets it first).
_HOST_METHODS = ("tobytes", "tofile", "dump", "dumps")


def _host_method(name):
    return lambda self, *args, **kwargs: getattr(self._read_back(), name)(*args, **kwargs)


def _device_method(name):
    numpy_method = getattr(numpy.ndarray, name)
    return lambda self, *args, **kwargs: _dispatch.call(name, numpy_method, (self, *args), kwargs)


def _methods():
    """The rest of real cupy.ndarray's methods, run by NumPy's of the same name."""
    for name in _names.listed("cupy.ndarray") - set(vars(ndarray)):
        if name in _HOST_METHODS:
            yield name, _host_method(name)
        elif inspect.ismethoddescriptor(vars(numpy.ndarray).get(name)):
            yield name, _device_method(name)


for _name, _function in [*_operators(), *_methods()]:
    _function.__name__ = _name
    setattr(ndarray, _name, _function)
ndarray.__module__ = "cupy"  # <class 'cupy.ndarray'>, as CuPy's names itself
