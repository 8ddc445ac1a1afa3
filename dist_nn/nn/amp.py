"""Mixed precision: forward and backward in float16 or bfloat16 over float32 master weights.

A policy outside the layers, as torch's autocast is. Inside `with autocast():`
- the master parameters (a FlatParameters' float32 buffer) are cast once into a half-precision
  copy, and every module that owns parameters computes with that copy, its input and output
  cast to half precision (a no-op where the backend already computes in it);
- BatchNorm runs in the master dtype, cast at its boundaries: its statistics and parameters
  stay float32; losses compute in float32 (nn/loss.py);
- parameter gradients still land in the float32 flat gradient buffer: layers add their half
  precision products into `.grad`, which NumPy and CuPy do in the buffer's dtype.
On leaving, parameters and modules are exactly what they were (evaluation, state_dict and the
optimizer see float32). The casts sit in subclasses swapped onto the module instances for the
duration (as torch.nn.utils.parametrize does), so the layer files know nothing of them.

float16 needs loss scaling (optim.LossScaler); bfloat16 has float32's range and needs none.
bfloat16 on NumPy needs `ml_dtypes` (pip extra `bf16`), on CuPy version 14 or newer.
"""
import contextlib

from .. import backend
from .batchnorm import _BatchNorm

MODES = ("off", "fp16", "bf16")


class PrecisionError(ValueError):
    """The backend cannot compute in the requested precision."""


def half_dtype(mode, xp=None):
    """The scalar type of "fp16" or "bf16" on the array module xp (default: the backend's);
    PrecisionError when that module cannot compute in it."""
    xp = xp or backend.xp
    if mode == "fp16":
        return xp.float16
    if mode != "bf16":
        raise PrecisionError(f"mixed precision must be one of {MODES[1:]}, got {mode!r}")
    try:
        import ml_dtypes
    except ImportError:
        raise PrecisionError("bf16 needs the ml_dtypes package (pip install 'dist_nn[bf16]'); "
                             "or use fp16") from None
    dtype = ml_dtypes.bfloat16
    try:  # CuPy computes in bfloat16 from version 14 on; older ones refuse the dtype
        probe = xp.ones(4, dtype=dtype)
        (probe * probe).sum()
    except Exception as error:
        raise PrecisionError(f"bf16 is not supported by {xp.__name__} "
                             f"{getattr(xp, '__version__', '')} ({error}); CuPy supports "
                             "bfloat16 from version 14 on: upgrade it, or use fp16") from None
    return dtype


class _HalfCompute:
    """Mixed into a module's class under autocast: input and output in half precision."""

    def forward(self, x):
        half = self._amp_half
        return super().forward(x.astype(half, copy=False)).astype(half, copy=False)

    def backward(self, dy):
        half = self._amp_half
        dx = super().backward(dy.astype(half, copy=False))
        return None if dx is None else dx.astype(half, copy=False)


class _MasterCompute:
    """Mixed into BatchNorm under autocast: computes in the master dtype, returns half."""

    def forward(self, x):
        return super().forward(x.astype(self._amp_master, copy=False)).astype(x.dtype, copy=False)

    def backward(self, dy):
        dx = super().backward(dy.astype(self._amp_master, copy=False))
        return None if dx is None else dx.astype(dy.dtype, copy=False)


_swapped_classes = {}


def _with_casts(cls, mixin):
    """cls with the casts of mixin in front, one class per (cls, mixin), named like cls."""
    key = (cls, mixin)
    if key not in _swapped_classes:
        _swapped_classes[key] = type(cls.__name__, (mixin, cls), {"__module__": cls.__module__})
    return _swapped_classes[key]


class Autocast:
    """`with Autocast(model, flat, "fp16")():` runs the model's forward and backward in half
    precision over the float32 master weights in `flat` (see the module's docstring).
    Modules of `float32_types` (BatchNorm by default) compute in the master dtype."""

    def __init__(self, model, flat, mode, float32_types=(_BatchNorm,)):
        xp = backend.get_array_module(flat.data)
        self.half = half_dtype(mode, xp)
        self.mode, self.flat = mode, flat
        self.master = flat.data.dtype
        self.half_data = xp.empty(flat.size, dtype=self.half)
        half_views = {id(p): self.half_data[start:end].reshape(p.shape)
                      for p, (start, end) in zip(flat.params, flat.offsets)}
        self.modules = []  # (module, casting class)
        self.half_params = []  # (parameter, its half-precision view, or None: cast a copy)
        for _, module in model.named_modules():
            own = [p for _, p in module.own_parameters()]
            if isinstance(module, float32_types):
                self.modules.append((module, _with_casts(type(module), _MasterCompute)))
            elif own:
                self.modules.append((module, _with_casts(type(module), _HalfCompute)))
                self.half_params += [(p, half_views.get(id(p))) for p in own]

    @contextlib.contextmanager
    def __call__(self):
        self.half_data[...] = self.flat.data  # the one cast of the master weights
        masters = [(p, p.data) for p, _ in self.half_params]
        classes = [(m, type(m)) for m, _ in self.modules]
        with backend.overflow_allowed():
            try:
                for p, view in self.half_params:  # frozen parameters: a half-precision copy
                    p.data = view if view is not None else p.data.astype(self.half)
                for module, cls in self.modules:
                    module._amp_half, module._amp_master = self.half, self.master
                    module.__class__ = cls
                yield self
            finally:
                for p, data in masters:
                    p.data = data
                for module, cls in classes:
                    module.__class__ = cls
                    del module._amp_half, module._amp_master
