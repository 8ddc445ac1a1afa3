"""cupy.cuda.nccl on the stand-in: the full module (_nccl.py: collectives over MPI), or, with
DIST_NN_STANDIN_NCCL=0, only `available = False`, as CuPy on a node without the NCCL
library."""
import os as _os

available = _os.environ.get("DIST_NN_STANDIN_NCCL", "1") != "0"

if available:
    from cupy.cuda._nccl import *  # noqa: F403  (the module is its __all__)
