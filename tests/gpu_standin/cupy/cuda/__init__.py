"""cupy.cuda on the stand-in: devices, streams and events (_context.py), the runtime's device
queries (runtime.py), and NCCL carried out over MPI (nccl.py, imported on demand as CuPy's)."""
from cupy.cuda import runtime
from cupy.cuda._context import (Device, Event, MemoryPointer, Stream,  # noqa: F401
                                get_current_stream, get_device_id)


def is_available():
    try:
        return runtime.getDeviceCount() > 0
    except runtime.CUDARuntimeError:
        return False
