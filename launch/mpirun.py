"""Run a command on N local ranks with the right mpiexec and one BLAS thread per core share.

    python -m launch.mpirun -n 4 python -m dist_nn.train ...

The mpiexec of the `mpich` wheel sits beside the Python executable; it is preferred to
whatever `mpiexec` is on PATH, which may belong to another MPI than mpi4py was loaded with.
SIGTERM, SIGHUP (as SIGUSR1: preemption) and SIGINT to the launcher reach every rank, and the
launcher waits for them (launch/job.py).
"""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dist_nn.dist.process import THREAD_VARIABLES, cores_per_rank
from .job import supervise


def mpiexec_path():
    """The mpiexec beside sys.executable, else the one on PATH, else None."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def rank_environment(ranks, extra=None):
    """os.environ plus one node's share of the cores per rank for BLAS/OpenMP threads."""
    threads = str(cores_per_rank(ranks))
    env = dict(os.environ, **{variable: threads for variable in THREAD_VARIABLES})
    env.update(extra or {})
    return env


def command(ranks, argv):
    launcher = mpiexec_path()
    if launcher is None:
        raise FileNotFoundError("no mpiexec found: pip install mpich (or install an MPI)")
    return [launcher, "-n", str(ranks), *argv]


def run(ranks, argv, env=None, **kwargs):
    """subprocess.run of argv on `ranks` local ranks."""
    return subprocess.run(command(ranks, argv), env=rank_environment(ranks, env), **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--ranks", type=int, required=True)
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="the command to run")
    args = parser.parse_args()
    sys.exit(supervise(command(args.ranks, args.argv), rank_environment(args.ranks)))


if __name__ == "__main__":
    main()
