"""cupy.ElementwiseKernel and cupy.ReductionKernel on the stand-in: the same CUDA C++ snippet
compiled for the host by the system's C++ compiler (g++), inside a loop shaped as CuPy's
generated kernel, so that the snippet's syntax, types and arithmetic are tested, not a Python
twin of them.

Faithful to CuPy 14 (cupy/_core/_kernel.pyx, _reduction.pyx) where misuse shows: parameter
lists ("T x, raw T y, float64 m"), type placeholders decided from the array arguments (outputs
first), scalars cast to their parameter's type (a scalar alone cannot decide a placeholder),
non-raw arrays broadcast together and bound as `const T &x` (inputs) or `T &x` (outputs),
raw arrays as CArray (a const one refuses writes), outputs all given or none and of the
broadcast shape, NumPy arrays refused. A call is one kernel launch on the current stream (or
the `stream` given). What it cannot show: CUDA-only syntax (threadIdx, __syncthreads, warp
intrinsics: not compiled here), float16/bfloat16 parameters (refused), and races between
threads (the loop runs in order).
"""
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import numpy

from cupy import _dispatch
from cupy._ndarray import ndarray
from cupy.cuda import _context

# CuPy's C names of the dtypes the stand-in compiles.
C_TYPES = {numpy.dtype(numpy.bool_): "bool", numpy.dtype(numpy.int8): "signed char",
           numpy.dtype(numpy.uint8): "unsigned char", numpy.dtype(numpy.int16): "short",
           numpy.dtype(numpy.uint16): "unsigned short", numpy.dtype(numpy.int32): "int",
           numpy.dtype(numpy.uint32): "unsigned int", numpy.dtype(numpy.int64): "long long",
           numpy.dtype(numpy.uint64): "unsigned long long",
           numpy.dtype(numpy.float32): "float", numpy.dtype(numpy.float64): "double"}

# What CUDA's device headers and CuPy's carray.cuh give every kernel, for the host compiler.
PRELUDE = r"""
#include <cmath>
#include <cstddef>
using std::isnan; using std::isinf; using std::isfinite;
inline float rsqrt(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
#define CUDA_MINMAX(T) inline T max(T a, T b) { return a > b ? a : b; } \
                       inline T min(T a, T b) { return a < b ? a : b; }
CUDA_MINMAX(int) CUDA_MINMAX(long long) CUDA_MINMAX(unsigned int)
CUDA_MINMAX(unsigned long long) CUDA_MINMAX(float) CUDA_MINMAX(double)
template <typename T> struct CArray {  // a raw argument: flat indexing, size()
  T *data_; ptrdiff_t size_;
  T &operator[](ptrdiff_t i) { return data_[i]; }
  const T &operator[](ptrdiff_t i) const { return data_[i]; }
  ptrdiff_t size() const { return size_; }
};
struct CIndexer { ptrdiff_t size_; ptrdiff_t size() const { return size_; } };
"""
_compiled = {}
# Built once for every process (as CuPy's ~/.cupy/kernel_cache), named by the source's hash.
_BUILD_DIR = os.path.join(tempfile.gettempdir(), f"cupy-standin-kernels-{os.getuid()}")


class Param:
    """One parameter of a kernel's in_params or out_params."""

    def __init__(self, text, is_const):
        words = text.split()
        if len(words) < 2:
            raise Exception(f"Syntax error: {text}")
        *keywords, type_name, self.name = words
        self.raw, self.is_const = False, is_const
        for keyword in keywords:
            if keyword != "raw":
                raise Exception(f'Unknown keyword "{keyword}"')
            self.raw = True
        # one letter: a placeholder decided by the arguments; else a dtype name
        self.placeholder = type_name if len(type_name) == 1 else None
        self.dtype = None if self.placeholder else numpy.dtype(type_name)


def _params(text, is_const):
    return tuple(Param(p, is_const) for p in text.split(",")) if text.strip() else ()


def _c_type(dtype):
    dtype = numpy.dtype(dtype)
    if dtype not in C_TYPES:
        raise TypeError(f"the stand-in compiles no kernels for dtype {dtype}")
    return C_TYPES[dtype]


def _host_args(args):
    """The stand-in arrays' NumPy arrays; scalars as they are; NumPy arrays refused."""
    out = []
    for arg in args:
        if isinstance(arg, ndarray):
            out.append(arg._array)
        elif _dispatch.is_scalar(arg):
            out.append(arg)
        else:
            raise _dispatch.unsupported(arg)
    return out


def _decide_types(in_params, out_params, in_args, out_args):
    """The dtype of every parameter and the placeholders' typedefs, as CuPy decides them:
    from the output arrays first, then the input arrays; scalars decide nothing."""
    placeholders = {}

    def note(param, dtype):
        if param.dtype is not None:
            if numpy.dtype(dtype) != param.dtype:
                raise TypeError(f"Type is mismatched. {param.name} {dtype} {param.dtype}")
        elif param.placeholder in placeholders:
            if placeholders[param.placeholder] != dtype:
                raise TypeError(f"Type is mismatched. {param.name} {dtype} "
                                f"{placeholders[param.placeholder]} {param.placeholder}")
        else:
            placeholders[param.placeholder] = dtype
    for param, arg in zip(out_params, out_args):
        note(param, arg.dtype)
    for param, arg in zip(in_params, in_args):
        if isinstance(arg, numpy.ndarray):
            note(param, arg.dtype)

    def dtype_of(param):
        if param.dtype is not None:
            return param.dtype
        if param.placeholder not in placeholders:
            raise TypeError(f"the type {param.placeholder} of {param.name} is decided by no "
                            "array argument")
        return placeholders[param.placeholder]
    return ([dtype_of(p) for p in in_params], [dtype_of(p) for p in out_params],
            "".join(f"typedef {_c_type(t)} {name};\n" for name, t in sorted(placeholders.items())))


def _compile(source, name):
    """The function `name` of the C++ `source`, compiled once per process."""
    key = hashlib.sha256(source.encode()).hexdigest()[:24]
    if key not in _compiled:
        library = os.path.join(_BUILD_DIR, key + ".so")
        if not os.path.exists(library):
            if shutil.which("g++") is None:
                raise RuntimeError("the CuPy stand-in compiles kernels with g++: install it "
                                   "(apt-get install g++)")
            os.makedirs(_BUILD_DIR, exist_ok=True)
            work = tempfile.mkdtemp(dir=_BUILD_DIR)
            with open(os.path.join(work, "kernel.cpp"), "w") as file:
                file.write(source)
            built = subprocess.run(["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-o",
                                    os.path.join(work, "kernel.so"),
                                    os.path.join(work, "kernel.cpp")],
                                   capture_output=True, text=True, check=False)
            if built.returncode != 0:
                raise RuntimeError(f"kernel {name} does not compile:\n{built.stderr}\n"
                                   f"--- source ---\n{source}")
            os.replace(os.path.join(work, "kernel.so"), library)  # atomic: processes race
            shutil.rmtree(work)
        function = getattr(ctypes.CDLL(library), name)
        function.argtypes, function.restype = [ctypes.POINTER(ctypes.c_void_p)], None
        _compiled[key] = function
    return _compiled[key]


def _bind(params, dtypes, values, index):
    """C++ declarations binding each parameter to slot k of the argument list: scalars as
    const values, raw arrays as CArray, non-raw arrays as references at `index`."""
    lines = []
    for k, (param, dtype, value) in enumerate(zip(params, dtypes, values)):
        c = param.placeholder or _c_type(dtype)
        const = "const " if param.is_const else ""
        pointer = f"(({c} *)_args[{k}])"
        if not isinstance(value, numpy.ndarray):
            lines.append(("scalar", f"const {c} {param.name} = *{pointer};"))
        elif param.raw:
            lines.append(("scalar", f"{const}CArray<{c}> {param.name} = {{{pointer}, "
                                    f"(ptrdiff_t)*(long long *)_args[{len(params) + k}]}};"))
        else:
            lines.append(("element", f"{const}{c} &{param.name} = {pointer}[{index}];"))
    return lines


class _Call:
    """The host memory of one call's arguments, and what must be copied back afterwards."""

    def __init__(self):
        self.keep, self.pointers, self.sizes, self.write_back = [], [], [], []

    def add(self, value, dtype, shape=None, output=False):
        if isinstance(value, numpy.ndarray):
            if shape is not None:
                value = numpy.broadcast_to(value, shape)
            buffer = numpy.ascontiguousarray(value)
            if output and buffer is not value:
                self.write_back.append((value, buffer))
            size = buffer.size
        else:
            buffer, size = numpy.array(value, dtype=dtype), 1
        self.keep.append(buffer)
        self.pointers.append(buffer.ctypes.data)
        self.sizes.append(size)

    def run(self, function, *extra):
        sizes = [numpy.array(s, numpy.int64) for s in (*self.sizes, *extra)]
        self.keep += sizes
        slots = (ctypes.c_void_p * (len(self.pointers) + len(sizes)))(
            *self.pointers, *(s.ctypes.data for s in sizes))
        function(slots)
        for target, buffer in self.write_back:
            target[...] = buffer


def _check_name(name):
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f'Invalid kernel name: "{name}"')


class ElementwiseKernel:
    """User-defined elementwise kernel (CuPy's signature and call rules)."""

    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True,
                 preamble="", no_return=False, return_tuple=False, **kwargs):
        _check_name(name)
        self.in_params, self.out_params = _params(in_params, True), _params(out_params, False)
        if "i" in [p.name for p in self.in_params + self.out_params]:
            raise ValueError("Can not use 'i' as a parameter name")
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        self.operation, self.name, self.preamble = operation, name, preamble
        self.reduce_dims, self.no_return, self.return_tuple = reduce_dims, no_return, return_tuple
        self.kwargs = kwargs

    def __call__(self, *args, size=-1, stream=None, block_size=128):
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either "
                            f"{self.nin} or {self.nargs} (with outputs), but given {len(args)}.")
        host = _host_args(args)
        params = self.in_params + self.out_params[:len(host) - self.nin]
        arrays = [a for a, p in zip(host, params) if isinstance(a, numpy.ndarray) and not p.raw]
        if size != -1 and arrays:
            raise ValueError("Specified 'size' can be used only if all of the ndarray are "
                             "'raw'.")
        if size == -1 and not arrays:
            raise ValueError("Loop size is undecided.")
        shape = (size,) if size != -1 else numpy.broadcast_shapes(*(a.shape for a in arrays))
        in_args, out_args = host[:self.nin], host[self.nin:]
        in_types, out_types, typedefs = _decide_types(self.in_params, self.out_params, in_args,
                                                      out_args)
        if not out_args:
            if any(p.raw for p in self.out_params) and size == -1:
                raise ValueError("Output array size is Undecided")
            out_args = [numpy.empty(shape, t) for t in out_types]
        for param, out in zip(self.out_params, out_args):
            if not isinstance(out, numpy.ndarray):
                raise TypeError("Output arguments type must be cupy.ndarray")
            if not param.raw and out.shape != shape:
                raise ValueError("Out shape is mismatched")
        results = [ndarray._wrap(o) for o in out_args]
        for given, k in zip(args[self.nin:], range(self.nout)):
            results[k] = given
        n = int(numpy.prod(shape))
        if n:
            self._run(in_args, out_args, in_types, out_types, typedefs, shape, n)
        _context.launch(1, stream)
        if self.no_return:
            return None
        return results[0] if self.nout == 1 and not self.return_tuple else tuple(results)

    def _run(self, in_args, out_args, in_types, out_types, typedefs, shape, n):
        params, dtypes = self.in_params + self.out_params, [*in_types, *out_types]
        call = _Call()
        for param, dtype, value in zip(params, dtypes, [*in_args, *out_args]):
            output = param in self.out_params
            broadcast = isinstance(value, numpy.ndarray) and not (param.raw or output)
            call.add(value, dtype, shape if broadcast else None, output)
        bound = _bind(params, dtypes, [*in_args, *out_args], "i")
        outside = "\n  ".join(line for kind, line in bound if kind == "scalar")
        inside = "\n    ".join(line for kind, line in bound if kind == "element")
        source = (f"{PRELUDE}\n{typedefs}\n{self.preamble}\n"
                  f'extern "C" void {self.name}(void **_args) {{\n'
                  f"  const CIndexer _ind = {{*(long long *)_args[{2 * len(params)}]}};\n"
                  f"  {outside}\n"
                  f"  for (ptrdiff_t i = 0; i < _ind.size(); i++) {{\n    {inside}\n"
                  f"    {self.operation};\n  }}\n}}\n")
        call.run(_compile(source, self.name), n)


class ReductionKernel:
    """User-defined reduction kernel (CuPy's signature and call rules)."""

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name="reduce_kernel", reduce_type=None, reduce_dims=True, preamble="",
                 options=()):
        _check_name(name)
        self.in_params, self.out_params = _params(in_params, True), _params(out_params, False)
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        self.map_expr, self.reduce_expr, self.post_map_expr = map_expr, reduce_expr, post_map_expr
        self.identity, self.name, self.reduce_type = identity, name, reduce_type
        self.reduce_dims, self.preamble, self.options = reduce_dims, preamble, options

    def __call__(self, *args, out=None, axis=None, keepdims=False, stream=None,
                 reduce_dims=None):
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either "
                            f"{self.nin} or {self.nargs} (with outputs), but given {len(args)}.")
        if any(p.raw for p in self.in_params + self.out_params):
            raise NotImplementedError("the stand-in's ReductionKernel takes no raw arguments")
        if out is not None:
            if len(args) == self.nargs:
                raise ValueError("cannot specify 'out' as both a positional and keyword "
                                 "argument")
            args = (*args, out)
        host = _host_args(args)
        in_args, out_args = host[:self.nin], host[self.nin:]
        arrays = [a for a in in_args if isinstance(a, numpy.ndarray)]
        if not arrays:
            raise ValueError("Loop size is undecided.")
        shape = numpy.broadcast_shapes(*(a.shape for a in arrays))
        ndim = len(shape)
        axes = tuple(range(ndim)) if axis is None else tuple(
            sorted(a % ndim for a in ((axis,) if numpy.isscalar(axis) else axis)))
        if len(set(axes)) != len(axes):
            raise ValueError("duplicate value in 'axis'")
        kept = tuple(d for d in range(ndim) if d not in axes)
        out_shape = tuple(1 if d in axes else shape[d] for d in range(ndim)) if keepdims \
            else tuple(shape[d] for d in kept)
        in_types, out_types, typedefs = _decide_types(self.in_params, self.out_params, in_args,
                                                      out_args)
        if not out_args:
            out_args = [numpy.empty(out_shape, t) for t in out_types]
        for given in out_args:
            if not isinstance(given, numpy.ndarray):
                raise TypeError("Output arguments type must be cupy.ndarray")
            if given.shape != out_shape:
                raise ValueError("Out shape is mismatched")
        n_out = int(numpy.prod(out_shape))
        n_reduced = int(numpy.prod([shape[d] for d in axes]))
        if n_out:
            if self.identity == "" and n_reduced == 0:
                raise ValueError(f"zero-size array to reduction operation {self.name} which "
                                 "has no identity")
            self._run(in_args, out_args, in_types, out_types, typedefs, shape, kept + axes,
                      n_out, n_reduced)
        _context.launch(1, stream)
        return args[self.nin] if len(args) > self.nin else ndarray._wrap(out_args[0])

    def _run(self, in_args, out_args, in_types, out_types, typedefs, shape, order, n_out,
             n_reduced):
        params, dtypes = self.in_params + self.out_params, [*in_types, *out_types]
        call = _Call()
        for value, dtype in zip(in_args, in_types):  # kept axes first, then reduced ones
            call.add(numpy.broadcast_to(value, shape).transpose(order).astype(dtype, copy=False)
                     if isinstance(value, numpy.ndarray) else value, dtype)
        for value, dtype in zip(out_args, out_types):
            call.add(value, dtype, output=True)
        bound = _bind(params, dtypes, [*in_args, *out_args], "_j")
        scalars = "\n  ".join(line for kind, line in bound if kind == "scalar")
        inputs = "\n      ".join(line.replace(" &", " ", 1) for (kind, line), p in
                                 zip(bound, params) if kind == "element" and p.is_const)
        outputs = "\n    ".join(line.replace("[_j]", "[_i]") for (kind, line), p in
                                zip(bound, params) if kind == "element" and not p.is_const)
        reduce_type = self.reduce_type or (self.out_params[0].placeholder
                                           or _c_type(out_types[0]))
        source = (f"{PRELUDE}\n{typedefs}\n{self.preamble}\n"
                  f"#define REDUCE(a, b) ({self.reduce_expr})\n"
                  f"#define POST_MAP(a) ({self.post_map_expr})\n"
                  f"typedef {reduce_type} _type_reduce;\n"
                  f'extern "C" void {self.name}(void **_args) {{\n'
                  f"  const long long _n_out = *(long long *)_args[{2 * len(params)}];\n"
                  f"  const long long _n_reduced = *(long long *)_args[{2 * len(params) + 1}];\n"
                  f"  {scalars}\n"
                  f"  for (ptrdiff_t _i = 0; _i < _n_out; _i++) {{\n"
                  f"    _type_reduce _s = _type_reduce({self.identity});\n"
                  f"    for (ptrdiff_t _j = _i * _n_reduced; _j < (_i + 1) * _n_reduced; _j++) {{\n"
                  f"      {inputs}\n"
                  f"      _type_reduce _a = static_cast<_type_reduce>({self.map_expr});\n"
                  f"      _s = REDUCE(_s, _a);\n    }}\n"
                  f"    {outputs}\n    POST_MAP(_s);\n  }}\n}}\n")
        call.run(_compile(source, self.name), n_out, n_reduced)
