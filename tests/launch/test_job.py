"""The launcher supervises its job: signals reach the ranks, it waits for them, and an
aborted job's shared-memory files are removed. (With training: tests/test_faults_process.py)"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


from launch import job, mpirun
from tests.distributed import mpi

FAILURE = [sys.executable, str(mpi.PROGRAMS / "failure.py"), "raise"]
LAUNCHER = [sys.executable, "-m", "launch.mpirun", "-n", "2"]
ENV = {"PYTHONPATH": str(mpi.ROOT)}


def shared_memory_printed(out):
    return {path for line in out.splitlines() if line.startswith("shared memory:")
            for path in line.split()[2:]}


@mpi.needs_mpi
@pytest.mark.slow
def test_an_aborted_job_leaves_no_shared_memory_behind():
    plain = mpirun.run(2, FAILURE, ENV, capture_output=True, text=True, timeout=60,
                       cwd=mpi.ROOT)
    left = {p for p in shared_memory_printed(plain.stdout) if Path(p).exists()}
    if not left and mpirun.is_open_mpi(mpirun.mpiexec_path()):
        pytest.skip("Open MPI's launcher removes an aborted job's shared memory itself")
    for path in left:  # without the launcher MPI_Abort leaves its files: the fault is real
        Path(path).unlink()
    assert plain.returncode != 0 and left, plain.stdout
    done = subprocess.run(LAUNCHER + FAILURE, capture_output=True, text=True, timeout=60,
                          cwd=mpi.ROOT, env=mpirun.rank_environment(2, ENV))
    mapped = shared_memory_printed(done.stdout)
    assert done.returncode != 0 and mapped, done.stdout
    assert not [p for p in mapped if Path(p).exists()]
    assert re.search(r"launcher: removed \d+ shared-memory files the job left in /dev/shm",
                     done.stderr), done.stderr


def test_descendants_and_their_mpi_segments(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import mmap, os, time\n"
                              f"f = open('/dev/shm/mpich_shm_{tmp_path.name}', 'w+b')\n"
                              "f.truncate(4096); m = mmap.mmap(f.fileno(), 4096)\n"
                              f"g = open('/dev/shm/{tmp_path.name}-data', 'w+b')\n"
                              "g.truncate(4096); n = mmap.mmap(g.fileno(), 4096)\n"
                              "print(os.getpid(), flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
    probe = Path(f"/dev/shm/mpich_shm_{tmp_path.name}")
    other = Path(f"/dev/shm/{tmp_path.name}-data")  # not MPI's: never the launcher's to remove
    try:
        assert int(child.stdout.readline()) == child.pid
        assert job.shared_memory(child.pid) == {probe}
        time.sleep(0.3)
        family = job.descendants(shell.pid)
        assert len(family) == 2 and family[0] == shell.pid
    finally:
        child.kill()
        for pid in job.descendants(shell.pid):
            os.kill(pid, signal.SIGKILL)
        probe.unlink(missing_ok=True)
        other.unlink(missing_ok=True)
