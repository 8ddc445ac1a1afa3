"""A failing rank ends the job; ranks share the cores."""
import time

import pytest
from threadpoolctl import threadpool_info

from dist_nn.dist import limit_threads
from dist_nn.dist.process import cores_per_rank
from tests.dist import mpi


@mpi.needs_mpi
@pytest.mark.parametrize("mode, message", [
    ("raise", "[rank 1/2] uncaught RuntimeError; aborting the job"),
    ("thread", "[rank 1/2] uncaught ZeroDivisionError in thread loader; aborting the job"),
    ("stuck", "[rank 0/2] watchdog: collective #"),
])
def test_a_failing_rank_ends_the_job_within_30_seconds(mode, message):
    start = time.monotonic()
    done = mpi.launch(2, "failure", mode, timeout=30)  # TimeoutExpired fails the test
    assert done.returncode != 0
    assert message in done.stderr, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert time.monotonic() - start < 30


def test_threads_are_the_rank_share_of_the_cores(monkeypatch):
    assert cores_per_rank(1) >= 1 and cores_per_rank(10**6) == 1
    threads = limit_threads(10**6)
    assert threads == 1
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert blas and all(i["num_threads"] == 1 for i in blas)


@mpi.needs_mpi
def test_the_watchdog_names_the_rank_that_never_arrived():
    done = mpi.launch(2, "failure", "stuck", timeout=30)
    assert done.returncode != 0
    assert "has not completed within 3 s: ranks [1] did not arrive; aborting the job" \
        in done.stderr, done.stderr
