"""Per-process set-up of a rank: its communicator, CPU threads, GPU, abort on failure or on
leaving early, and the collective watchdog."""
import atexit
import os
import socket
import sys
import threading
import time
import traceback

from .. import backend
from .. import signals
from .comm import MPICommunicator, communicator
from .watchdog import Watchdog


class LaunchError(RuntimeError):
    """The processes were started in a way that cannot make one job."""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cores_per_rank(local_size):
    """This process's share of the CPU cores it may run on, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_size))


def threads_per_rank(local_size):
    """A user's OMP_NUM_THREADS (honoured, never overridden), else the rank's core share."""
    requested = os.environ.get("OMP_NUM_THREADS", "").strip()
    if requested.isdigit() and int(requested) > 0:
        return int(requested)
    return cores_per_rank(local_size)


def limit_threads(local_size, threads=None):
    """Give each of the node's `local_size` ranks its threads_per_rank for BLAS/OpenMP (or
    exactly `threads`), so that ranks never oversubscribe the cores unasked. Returns the
    thread count."""
    threads = threads or threads_per_rank(local_size)
    for variable in THREAD_VARIABLES:  # for libraries loaded later
        os.environ[variable] = str(threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(threads)  # for those already loaded (NumPy's OpenBLAS)
    return threads


def abort_on_failure(comm):
    """Any uncaught exception, in the main thread or another, is logged with the rank and
    ends the whole job (MPI_Abort): one failing rank never leaves the others hanging in a
    collective. With more than one rank, so does a rank that leaves before `allow_exit()`
    while the others do not (collective: call it on every rank)."""
    def report_and_abort(kind, value, tb, where=""):
        if issubclass(kind, KeyboardInterrupt):  # Ctrl-C with no handler, or pressed again
            sys.stderr.write(f"[rank {comm.rank}/{comm.size}] interrupted: stopping without "
                             "a checkpoint\n")
            comm.abort(signals.EXIT_INTERRUPTED)
        message = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"[rank {comm.rank}/{comm.size}] uncaught {kind.__name__}{where}; "
                         f"aborting the job\n{message}")
        comm.abort(1)

    sys.excepthook = report_and_abort
    threading.excepthook = lambda args: report_and_abort(
        args.exc_type, args.exc_value, args.exc_traceback, f" in thread {args.thread.name}")
    if comm.size > 1:
        _LeavingGuard(comm)


EXIT_GRACE_S = 10.0  # how long a rank leaving before allow_exit() waits for all to leave with it
_exit_allowed = False


def allow_exit():
    """Mark the normal end of this rank's part of a run, once its last collective is behind
    it: from here on the process may end, however long the other ranks still take (rank 0's
    final checkpoint). Before it, a rank that ends (sys.exit, os._exit, the end of its program)
    aborts the whole job, naming itself, unless every rank ends with it."""
    global _exit_allowed
    _exit_allowed = True


class _LeavingGuard:
    """Checks this rank's exits until `allow_exit()`: at exit (SystemExit or the end of the
    program) and in os._exit, which runs no exit code of Python's and which MPICH's launcher
    would count as a success while it kills the other ranks."""

    def __init__(self, comm):
        self.comm, self.pid = comm, os.getpid()
        self.exits = comm.comm.Dup()  # the others may be inside a collective on the world's
        self.real_exit = os._exit
        os._exit = self.os_exit
        atexit.register(self.check, "sys.exit or the end of its program")  # before MPI's end

    def os_exit(self, code):
        if os.getpid() == self.pid:  # not a child forked by this rank
            self.check(f"os._exit({code})")
        self.real_exit(code)

    def check(self, how):
        """Return if allowed to exit, or when all ranks are leaving too; else abort the job."""
        if _exit_allowed:
            return
        every_rank = self.exits.Ibarrier()
        deadline = time.monotonic() + EXIT_GRACE_S
        while time.monotonic() < deadline:
            if every_rank.Test():
                return
            time.sleep(0.05)
        sys.stderr.write(f"[rank {self.comm.rank}/{self.comm.size}] left before the run "
                         f"finished ({how}) while other ranks carry on; aborting the job\n")
        self.comm.abort(1)


def check_slurm_launch(comm):
    """Inside an srun job step, MPI must see all of the step's tasks: a world of 1 on every
    task means each was started as a singleton (srun without a PMI plugin MPI can use)."""
    tasks = os.environ.get("SLURM_STEP_NUM_TASKS")
    if tasks is not None and int(tasks) != comm.size:
        raise LaunchError(
            f"srun started {tasks} tasks but MPI sees a world of {comm.size}: the tasks did "
            "not find each other (each started as a singleton). Launch with srun --mpi=pmi2 "
            "(or --mpi=pmix; `srun --mpi=list` shows what the cluster offers), or with mpirun "
            "inside the allocation")


def setup(kind="auto", device="auto", cuda_aware=False, threads=None, watchdog_s=0):
    """Start this rank: communicator ("auto" | "local" | "mpi" | "nccl"), BLAS threads
    (threads_per_rank, or `threads`), abort on failure, on GPUs the device `local_rank`
    (modulo the GPUs present), and with watchdog_s > 0 a watchdog that aborts the job,
    naming the missing ranks, when a collective waits longer than that."""
    with signals.held():  # a stop signal during MPI's start-up waits until it is done
        base = communicator("mpi" if kind == "nccl" else kind, cuda_aware)
    abort_on_failure(base)
    check_slurm_launch(base)
    limit_threads(base.local_size, threads)
    backend.use(device)
    if backend.device == "gpu":
        backend.cupy.cuda.Device(base.local_rank % backend.cupy.cuda.runtime.getDeviceCount()).use()
    comm = communicator("nccl") if kind == "nccl" else base
    if watchdog_s and isinstance(comm, MPICommunicator) and comm.size > 1:
        comm = Watchdog(comm, watchdog_s)
    return comm


def placement(comm):
    """Lines `rank r -> host (local rank l) -> device` for every rank (gathered)."""
    where = "cpu" if backend.device == "cpu" else f"gpu {backend.cupy.cuda.Device().id}"
    gathered = comm.allgather_obj((socket.gethostname(), comm.local_rank, where))
    return [f"rank {r} -> {host} (local rank {local}) -> {device}"
            for r, (host, local, device) in enumerate(gathered)]
