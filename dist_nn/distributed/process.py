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
from .comm import MPICommunicator, communicator, mpi_cuda_support
from .watchdog import Watchdog


class LaunchError(RuntimeError):
    """The processes were started in a way that cannot make one job, or without what the
    configuration asks of them (a GPU, NCCL, a CUDA-aware MPI). `said_here`: this process
    says it (rank 0 of a job; every process that is alone)."""

    def __init__(self, message, said_here=True):
        super().__init__(message)
        self.said_here = said_here

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


SIGNAL_GRACE_S = 10.0  # a stop signal during start-up: the time start-up has to reach its vote


class StartupDeadline:
    """Ends the job, naming this rank and what it was doing, when its start-up (everything
    before the first training step) takes longer than `seconds`, or goes on more than
    SIGNAL_GRACE_S after a stop signal (`stop`: the PreemptionSignal) with 75 or 130, as
    nothing was trained. The watchdog times collectives; a rank stuck outside any (a file
    system that does not answer, where a signal only sets a flag) is ended here, also when
    every rank is stuck alike. `phase` says what it is doing; cancel() once training starts."""

    def __init__(self, comm, seconds, stop=None):
        self.comm, self.phase, self.seconds, self.stop = comm, "starting", seconds, stop
        self._done = threading.Event()
        threading.Thread(target=self._watch, name="start-up deadline", daemon=True).start()

    def _watch(self):
        began, signalled = time.monotonic(), None
        while not self._done.wait(0.1):
            now = time.monotonic()
            if signalled is None and self.stop is not None and self.stop.received:
                signalled = now
            if signalled is not None and now - signalled > SIGNAL_GRACE_S:
                code = self.stop.exit_code(self.stop.votes())
                self._end(f"{signals.stopped(code)} ({self.stop.described()}) during "
                          f"start-up, still {self.phase}: no step trained, nothing to lose; "
                          f"exiting with {code}", code)
            elif now - began > self.seconds:
                self._end(f"start-up: still {self.phase} after {self.seconds:g} s "
                          "(train.watchdog_s): a file system that does not answer?; aborting "
                          "the job", 1)

    def _end(self, message, code):
        if not self._done.is_set():  # start-up may have ended meanwhile
            sys.stderr.write(f"[rank {self.comm.rank}/{self.comm.size}] {message}\n")
            self.comm.abort(code)

    def cancel(self):
        self._done.set()


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


# the node-local rank as launchers give it: Open MPI, MPICH's hydra, MVAPICH, SLURM's srun
LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                        "MV2_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")
CUDA_AWARE = ("auto", "on", "off")


def launcher_local_rank():
    """This process's rank on its node from the launcher's environment, or None."""
    for variable in LOCAL_RANK_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value.isdigit():
            return int(value)
    return None


def use_gpu(local_rank):
    """Make GPU `local_rank` (modulo the GPUs this process sees) the current device."""
    cuda = backend.cupy.cuda
    cuda.Device(local_rank % cuda.runtime.getDeviceCount()).use()


def setup(kind="auto", device="auto", cuda_aware="auto", threads=None, watchdog_s=0):
    """Start this rank: communicator ("auto" | "local" | "mpi" | "nccl"), BLAS threads
    (threads_per_rank, or `threads`), abort on failure, and on GPUs the device of the
    node-local rank (modulo the GPUs present), chosen from the launcher's variables before
    MPI starts (a CUDA-aware MPI may touch the current device at start-up), else from MPI's
    shared-memory split. `cuda_aware` ("auto" | "on" | "off"): whether MPI takes device
    buffers; "auto" asks the MPI library. With watchdog_s > 0 a watchdog aborts the job,
    naming the missing ranks, when a collective waits longer than that. A GPU, NCCL or a
    CUDA-aware MPI asked for but missing is a LaunchError on every rank, said by rank 0."""
    if cuda_aware not in CUDA_AWARE:
        raise ValueError(f"cuda_aware must be one of {CUDA_AWARE}, got {cuda_aware!r}")
    missing = None
    try:
        backend.use(device)
    except RuntimeError as error:  # no usable GPU: said once the job can agree on it
        missing = str(error)
    local_rank = launcher_local_rank()
    if backend.device == "gpu" and local_rank is not None:
        use_gpu(local_rank)
    with signals.held():  # a stop signal during MPI's start-up waits until it is done
        base = communicator("mpi" if kind == "nccl" else kind)
    abort_on_failure(base)
    check_slurm_launch(base)
    limit_threads(base.local_size, threads)
    if backend.device == "gpu":
        if local_rank is None:
            use_gpu(base.local_rank)
        missing = missing or _device_path(base, kind, cuda_aware)
    elif kind == "nccl":
        missing = missing or ("train.comm = \"nccl\" needs a CUDA GPU per rank, and this "
                              "process has none: use train.comm = \"mpi\"")
    _agree(base, missing)
    comm = communicator("nccl") if kind == "nccl" else base
    if watchdog_s and isinstance(comm, MPICommunicator) and comm.size > 1:
        comm = Watchdog(comm, watchdog_s)
    return comm


def _device_path(base, kind, cuda_aware):
    """Set how `base` moves device buffers; what is missing for the path asked for, or None."""
    if kind == "nccl":
        from cupy.cuda import nccl
        if not getattr(nccl, "available", False):
            return ("train.comm = \"nccl\" needs the NCCL library, which CuPy cannot load: "
                    "pip install 'nvidia-nccl-cu12>=2.18.1,<3' (the gpu extra installs it), or "
                    "use train.comm = \"mpi\"")
    if isinstance(base, MPICommunicator):
        supported = mpi_cuda_support()
        if cuda_aware == "on" and supported is False:
            library = base.MPI.Get_library_version().splitlines()[0].strip()
            return (f"train.cuda_aware = \"on\" but this MPI ({library}) does not take CUDA "
                    "device buffers: use an MPI built with CUDA support, or "
                    "train.cuda_aware = \"auto\"")
        base.cuda_aware = cuda_aware == "on" or (cuda_aware == "auto" and bool(supported))
    return None


def _agree(base, missing):
    """Raise one LaunchError on every rank when any rank found something missing."""
    messages = base.allgather_obj(missing) if base.size > 1 else [missing]
    failed = [(rank, message) for rank, message in enumerate(messages) if message]
    if failed:
        rank, message = failed[0]
        raise LaunchError(f"rank {rank}: {message}" if base.size > 1 else message,
                          said_here=base.rank == 0)


def placement(comm):
    """Lines `rank r -> host (local rank l) -> device` for every rank (gathered)."""
    where = "cpu" if backend.device == "cpu" else f"gpu {backend.cupy.cuda.Device().id}"
    gathered = comm.allgather_obj((socket.gethostname(), comm.local_rank, where))
    return [f"rank {r} -> {host} (local rank {local}) -> {device}"
            for r, (host, local, device) in enumerate(gathered)]
