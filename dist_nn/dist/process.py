"""Per-process set-up of a rank: its communicator, CPU threads, GPU, and abort on failure."""
import os
import sys
import threading
import traceback

from .. import backend
from .comm import communicator

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cores_per_rank(local_size):
    """This process's share of the CPU cores it may run on, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_size))


def limit_threads(local_size, threads=None):
    """Give each of the node's `local_size` ranks its share of the cores for BLAS/OpenMP (or
    exactly `threads`), so that ranks never oversubscribe them. Returns the thread count."""
    threads = threads or cores_per_rank(local_size)
    for variable in THREAD_VARIABLES:  # for libraries loaded later
        os.environ[variable] = str(threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(threads)  # for those already loaded (NumPy's OpenBLAS)
    return threads


def abort_on_failure(comm):
    """Any uncaught exception, in the main thread or another, is logged with the rank and
    ends the whole job (MPI_Abort): one failing rank never leaves the others hanging in a
    collective."""
    def report_and_abort(kind, value, tb, where=""):
        message = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"[rank {comm.rank}/{comm.size}] uncaught {kind.__name__}{where}; "
                         f"aborting the job\n{message}")
        comm.abort(1)

    sys.excepthook = report_and_abort
    threading.excepthook = lambda args: report_and_abort(
        args.exc_type, args.exc_value, args.exc_traceback, f" in thread {args.thread.name}")


def setup(kind="auto", device="auto", cuda_aware=False, threads=None):
    """Start this rank: communicator ("auto" | "local" | "mpi" | "nccl"), BLAS threads (the
    rank's share of the node's cores, or `threads`), abort on failure, and on GPUs the device
    `local_rank` (modulo the GPUs present)."""
    base = communicator("mpi" if kind == "nccl" else kind, cuda_aware)
    abort_on_failure(base)
    limit_threads(base.local_size, threads)
    backend.use(device)
    if backend.device == "gpu":
        backend.cupy.cuda.Device(base.local_rank % backend.cupy.cuda.runtime.getDeviceCount()).use()
    return communicator("nccl") if kind == "nccl" else base
