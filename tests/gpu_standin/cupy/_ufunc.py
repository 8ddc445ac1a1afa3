"""cupy.ufunc: a NumPy ufunc over stand-in arrays, whose operands must be device arrays or
scalars (CuPy raises TypeError for anything else, a NumPy array included)."""
from cupy import _dispatch


def _check_operands(operands):
    from cupy._ndarray import ndarray
    for operand in operands:
        if not (isinstance(operand, ndarray) or _dispatch.is_scalar(operand)):
            raise _dispatch.unsupported(operand)


class ufunc:
    """CuPy's universal function `name`, computed by NumPy's."""

    def __init__(self, numpy_ufunc):
        self._ufunc = numpy_ufunc
        self.name = self.__name__ = numpy_ufunc.__name__
        self.nin, self.nout, self.nargs = numpy_ufunc.nin, numpy_ufunc.nout, numpy_ufunc.nargs
        self.types = numpy_ufunc.types

    def __call__(self, *args, **kwargs):
        operands, outs = args[:self.nin], args[self.nin:]
        if outs:  # outputs given by position
            kwargs["out"] = outs if len(outs) > 1 else outs[0]
        _check_operands(operands)
        out = kwargs.get("out")
        if out is not None:
            _check_operands(out if isinstance(out, tuple) else (out,))
        return _dispatch.call(self.name, self._ufunc, operands, kwargs)

    def _method(self, method, args, kwargs):
        return _dispatch.call(f"{self.name}.{method}", getattr(self._ufunc, method), args,
                              kwargs)

    def reduce(self, *args, **kwargs):
        return self._method("reduce", args, kwargs)

    def accumulate(self, *args, **kwargs):
        return self._method("accumulate", args, kwargs)

    def reduceat(self, *args, **kwargs):
        return self._method("reduceat", args, kwargs)

    def outer(self, *args, **kwargs):
        _check_operands(args[:2])
        return self._method("outer", args, kwargs)

    def at(self, *args, **kwargs):
        return self._method("at", args, kwargs)

    def __repr__(self):
        return f"<ufunc '{self.name}'>"
