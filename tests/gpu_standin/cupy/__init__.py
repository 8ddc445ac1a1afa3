"""A strict stand-in for CuPy 14.2 (with cupyx), run on NumPy, so that dist_nn's GPU path is
tested where no GPU is: put tests/gpu_standin first on sys.path (PYTHONPATH), or run the suite
with DIST_NN_CUPY_STANDIN=1 (tests/conftest.py does it, for subprocesses too), and
`import cupy` gives this package.

What it proves, for the code it runs:
- the API contract: only names real CuPy 14.2 has exist here (cupy_names.txt, listed from the
  real package; NumPy serves the rest of a listed name's behaviour), so a name CuPy lacks
  fails with AttributeError as on a GPU;
- the host boundary, as CuPy draws it: numpy.asarray(device_array) and NumPy operands in
  device calls raise TypeError (assigning a NumPy array into a device array raises CuPy's
  ValueError); host data moves only through explicit uploads (asarray/array of host data,
  ndarray.set) and reads (get, asnumpy, item, tolist, float/int/bool, repr);
- the budgets: device operations (kernel launches: _costs.py is the one rule), host syncs
  (every read back and every synchronize: cuda/_context.py), uploads, random generators
  created and pinned allocations, each with its call sites (cupy._standin.counts(),
  counting(), reset(), tracing());
- device selection: the device CUDA was first initialised on, and the devices used
  (cupy._standin.cuda_initialised_on(), devices_used(); DIST_NN_STANDIN_GPUS devices);
- stream discipline: whether a stream has work queued since its last synchronisation
  (pending_work), and in strict mode (strict_handoff(True)) that a device buffer reaches a
  CUDA-aware library (its __cuda_array_interface__) only after one; stall(stream) makes a
  stream's later work hang, as a kernel that never finishes;
- NCCL's calls and contract (cuda/nccl.py): raw pointers, equal counts, one GPU per rank,
  collectives carried out over MPI so that several ranks really reduce.

What it cannot prove: speed (NumPy runs everything, on the host), real kernels (their
numerics, dtype corners and launch failures), real stream concurrency (work runs eagerly, at
once; only the bookkeeping is a GPU's), memory limits and pools, and transport through
CUDA-aware MPI or NCCL (device memory is host memory here, so MPI reads it directly).
"""
import numpy as _numpy

from cupy import cuda  # noqa: F401
from cupy import _standin  # noqa: F401  (the stand-in's own API, for tests)
from cupy._host import (array, asanyarray, asarray, ascontiguousarray,  # noqa: F401
                        asfortranarray, asnumpy, get_array_module)
from cupy._kernel import ElementwiseKernel, ReductionKernel  # noqa: F401
from cupy._ndarray import ndarray  # noqa: F401
from cupy._ufunc import ufunc  # noqa: F401
from cupy import lib, linalg, random  # noqa: F401
from cupy import _dispatch

__version__ = "14.2.0"


def is_available():
    return cuda.is_available()


def __getattr__(name):
    """A listed name served by NumPy's function, ufunc, type or constant of that name."""
    return _dispatch.from_numpy("cupy", name, _numpy, globals())


def __dir__():
    return sorted({name for name in globals() if not name.startswith("_")}
                  | set(_dispatch.served_names("cupy", _numpy)))
