"""A failing, hanging or vanishing rank ends the job; ranks share the cores."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

from dist_nn.distributed import limit_threads
from dist_nn.distributed.process import THREAD_VARIABLES, cores_per_rank
from tests.distributed import mpi


@mpi.needs_mpi
@pytest.mark.parametrize("mode, message", [
    ("raise", "[rank 1/2] uncaught RuntimeError; aborting the job"),
    ("thread", "[rank 1/2] uncaught ZeroDivisionError in thread loader; aborting the job"),
    ("stuck", "[rank 0/2] watchdog: collective #"),
    # a rank that leaves with status 0: MPICH's launcher once reported the job a success
    # (os._exit) or it hung in MPI_Finalize (sys.exit)
    pytest.param("sys_exit", "[rank 1/2] left before the run finished (sys.exit or the end "
                 "of its program) while other ranks carry on; aborting the job",
                 marks=pytest.mark.slow),  # slow: the others get 10 s to end with it
    pytest.param("os_exit", "[rank 1/2] left before the run finished (os._exit(0)) while "
                 "other ranks carry on; aborting the job", marks=pytest.mark.slow),
])
def test_a_failing_rank_ends_the_job_within_30_seconds(mode, message):
    start = time.monotonic()
    done = mpi.launch(2, "failure", mode, timeout=30)  # TimeoutExpired fails the test
    assert done.returncode != 0
    assert message in done.stderr, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert time.monotonic() - start < 30


@mpi.needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["together", "finish_apart"])
def test_ranks_that_end_together_or_after_allow_exit_exit_cleanly(mode):
    done = mpi.launch(2, "failure", mode, timeout=60)
    assert done.returncode == 0, done.stderr


def gforker():
    """MPICH's simple launcher, which leaves the other ranks running when one dies (as srun
    does), unlike hydra; None when absent."""
    mpiexec = mpi.mpirun.mpiexec_path()
    path = mpiexec and Path(mpiexec).with_name("mpiexec.gforker")
    return path if path and path.exists() else None


@pytest.mark.skipif(gforker() is None, reason="needs MPICH's mpiexec.gforker")
def test_a_dead_rank_on_the_node_is_noticed_without_the_watchdog():
    """The watchdog thread sees the peer's process gone at once (its timeout here is 120 s).
    (gforker's own exit status says nothing: it reports 0 after an MPI_Abort.)"""
    start = time.monotonic()
    argv = [gforker(), "-n", "2", sys.executable, str(mpi.PROGRAMS / "failure.py"), "kill"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=mpi.ROOT,
                          env=mpi.mpirun.rank_environment(2, {"PYTHONPATH": str(mpi.ROOT)}))
    assert "[rank 0/2] ranks [1] on this node have ended (pids [" in done.stderr, done.stderr
    assert "while collective #" in done.stderr and time.monotonic() - start < 30


def blas_threads():
    blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert blas
    return set(blas)


def test_threads_are_the_rank_share_of_the_cores_unless_the_user_set_them(monkeypatch):
    for variable in THREAD_VARIABLES:  # restored after the test
        monkeypatch.setenv(variable, "")
    assert cores_per_rank(1) >= 1 and cores_per_rank(10**6) == 1
    assert limit_threads(10**6) == 1 and blas_threads() == {1}
    assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert limit_threads(10**6) == 2 and blas_threads() == {2}
    assert os.environ["MKL_NUM_THREADS"] == "2"
    limit_threads(10**6, threads=1)


@mpi.needs_mpi
def test_the_watchdog_names_the_rank_that_never_arrived():
    done = mpi.launch(2, "failure", "stuck", timeout=30)
    assert done.returncode != 0
    assert "has not completed within 3 s: ranks [1] did not arrive; aborting the job" \
        in done.stderr, done.stderr
