"""The CUDA runtime calls dist_nn makes, for DIST_NN_STANDIN_GPUS devices (default 1; 0: a
machine without a GPU, where CuPy imports but every device call fails)."""
import os as _os

# The CUDA runtime's status codes and texts for the errors the stand-in raises.
_ERRORS = {100: ("cudaErrorNoDevice", "no CUDA-capable device is detected"),
           101: ("cudaErrorInvalidDevice", "invalid device ordinal")}

is_hip = False


class CUDARuntimeError(RuntimeError):
    """A failed CUDA runtime call, as CuPy raises it (`status`: the CUDA error code)."""

    def __init__(self, status):
        self.status = status
        name, text = _ERRORS[status]
        super().__init__(f"{name}: {text}")

    def __reduce__(self):
        return type(self), (self.status,)


def getDeviceCount():
    count = int(_os.environ.get("DIST_NN_STANDIN_GPUS", "1"))
    if count <= 0:
        raise CUDARuntimeError(100)
    return count


def _check_device(device):
    """Raise CUDA's error for a device ordinal this machine lacks."""
    if not 0 <= device < getDeviceCount():
        raise CUDARuntimeError(101)


def getDeviceProperties(device):
    _check_device(device)
    return {"name": b"cupy stand-in", "totalGlobalMem": 80 * 2**30, "major": 9, "minor": 0,
            "multiProcessorCount": 132, "pciBusID": device}

streamLegacy = 1  # the legacy default stream's handle, which __cuda_array_interface__ names
