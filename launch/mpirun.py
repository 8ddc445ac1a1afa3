"""Run a command on N local ranks with the right mpiexec and a share of the cores per rank.

    python -m launch.mpirun -n 4 python -m dist_nn.train [section.key=value ...]
    dist-nn-mpirun -n 4 dist-nn-train [section.key=value ...]       (installed)

The mpiexec beside the Python executable (the `mpich` wheel's, or a virtual environment's) is
preferred to the one on PATH, which may belong to another MPI than mpi4py was built with.
Each rank gets OMP_NUM_THREADS (and OpenBLAS's, MKL's) = cores / N, unless OMP_NUM_THREADS is
already set: then that is honoured. With Open MPI's mpiexec, the flags it needs on a small
machine or in a container are added: --oversubscribe (more ranks than cores) and, as root,
--allow-run-as-root. SIGTERM, SIGHUP (as SIGUSR1: preemption) and SIGINT (Ctrl-C; as SIGUSR2
through Open MPI, whose mpiexec cannot pass it on) to the launcher reach every rank, and the
launcher waits for them to checkpoint and stop; a second Ctrl-C kills the job at once, 130
(launch/job.py). The exit status is mpiexec's (that of the failing rank, if any).
"""
if __name__ == "__main__":  # first of all: a stop signal during the imports below is kept
    from .job import note_stop_signals
    note_stop_signals()

import argparse
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dist_nn.distributed.process import THREAD_VARIABLES, threads_per_rank
from .job import supervise


def mpiexec_path():
    """The mpiexec beside sys.executable, else the one on PATH, else None."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


@functools.lru_cache(maxsize=None)
def is_open_mpi(launcher):
    """Whether `launcher` is Open MPI's mpiexec (`mpiexec (OpenRTE) 4.1.4`, `(Open MPI) 5...`)."""
    try:
        version = subprocess.run([launcher, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Open MPI" in version or "OpenRTE" in version


def launcher_flags(launcher):
    """The flags Open MPI needs here: oversubscription (it refuses more ranks than cores by
    default) and, in a container running as root, permission to run as root."""
    if not is_open_mpi(launcher):
        return []
    return ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])


def rank_environment(ranks, extra=None):
    """os.environ plus each rank's thread count for BLAS/OpenMP (threads_per_rank)."""
    threads = str(threads_per_rank(ranks))
    env = dict(os.environ, **{variable: threads for variable in THREAD_VARIABLES})
    env.update(extra or {})
    return env


def command(ranks, argv):
    launcher = mpiexec_path()
    if launcher is None:
        raise FileNotFoundError("no mpiexec found: pip install mpich (or install an MPI)")
    return [launcher, *launcher_flags(launcher), "-n", str(ranks), *argv]


def run(ranks, argv, env=None, **kwargs):
    """subprocess.run of argv on `ranks` local ranks."""
    return subprocess.run(command(ranks, argv), env=rank_environment(ranks, env), **kwargs)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m launch.mpirun", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--ranks", type=int, required=True, help="number of ranks")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND ...",
                        help="the program each rank runs, with its arguments")
    args = parser.parse_args(argv)
    if args.ranks < 1:
        parser.error(f"-n must be at least 1, got {args.ranks}")
    if not args.argv:
        parser.error("no command to run")
    try:
        launch = command(args.ranks, args.argv)
    except FileNotFoundError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    sys.exit(supervise(launch, rank_environment(args.ranks), is_open_mpi(launch[0]),
                       args.ranks))


if __name__ == "__main__":
    main()
