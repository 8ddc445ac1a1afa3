"""The stand-in's own API, for tests (CuPy has no such module): what was counted and where,
which device CUDA was initialised on, which streams have unsynchronised work, and the strict
hand-off mode."""
from cupy._counters import Counts, counting, counts, reset, tracing  # noqa: F401
from cupy.cuda._context import (cuda_initialised_on, devices_used, pending_work,  # noqa: F401
                                stall, strict_handoff)
