"""launch.mpirun: which mpiexec, the flags Open MPI needs, each rank's thread count."""
import os
import shutil
import sys

import pytest

from dist_nn.distributed.process import cores_per_rank
from launch import mpirun
from tests.distributed import mpi

OPEN_MPI = shutil.which("mpiexec.openmpi")  # Debian's Open MPI (CI installs it)


@pytest.mark.skipif(OPEN_MPI is None, reason="no Open MPI (apt-get install openmpi-bin)")
def test_open_mpi_gets_oversubscription_and_root_permission():
    assert mpirun.is_open_mpi(OPEN_MPI)
    flags = mpirun.launcher_flags(OPEN_MPI)
    assert flags[0] == "--oversubscribe"
    assert ("--allow-run-as-root" in flags) == (os.geteuid() == 0)


@mpi.needs_mpi
def test_mpich_gets_no_extra_flags():
    launcher = mpirun.mpiexec_path()
    if mpirun.is_open_mpi(launcher):
        pytest.skip("this Python's mpiexec is Open MPI's")
    assert mpirun.launcher_flags(launcher) == []
    assert mpirun.command(3, ["prog"]) == [launcher, "-n", "3", "prog"]


def test_a_users_omp_num_threads_is_honoured(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert {mpirun.rank_environment(8)[v] for v in mpirun.THREAD_VARIABLES} == {"3"}
    monkeypatch.delenv("OMP_NUM_THREADS")
    share = str(cores_per_rank(2))
    assert {mpirun.rank_environment(2)[v] for v in mpirun.THREAD_VARIABLES} == {share}


@mpi.needs_mpi
def test_ranks_start_with_the_threads_asked_for(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    code = ("from dist_nn.distributed import setup; from threadpoolctl import threadpool_info; "
            "comm = setup('mpi'); blas = [i['num_threads'] for i in threadpool_info() "
            "if i['user_api'] == 'blas']; every = comm.allgather_obj(blas); "
            "comm.rank == 0 and print(every)")
    done = mpirun.run(2, [sys.executable, "-c", code], env={"PYTHONPATH": str(mpi.ROOT)},
                      capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[[2], [2]]"


@pytest.mark.parametrize("ranks", ["0", "-1"])
def test_fewer_than_one_rank_is_refused(ranks, capsys):
    with pytest.raises(SystemExit) as exited:
        mpirun.main(["-n", ranks, sys.executable, "-c", "pass"])
    assert exited.value.code == 2
    assert f"-n must be at least 1, got {ranks}" in capsys.readouterr().err
