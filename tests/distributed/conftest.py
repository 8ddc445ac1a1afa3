"""Session fixtures: each MPI test program runs once per world size; tests read its results."""
import pytest

from tests.distributed import mpi
from tests.distributed.programs.equivalence import MODELS, VARIANTS

WORLD_SIZES = (2, 4)
EQUIVALENCE_CASES = [f"{m}:{v}" for m in MODELS for v in VARIANTS
                     if v not in ("no_syncbn", "clip") or m in ("mlp", "cnn")]


@pytest.fixture(scope="session")
def collectives(tmp_path_factory):
    if mpi.mpirun.mpiexec_path() is None:
        pytest.skip("no mpiexec (pip install mpich)")
    path = tmp_path_factory.mktemp("collectives")
    return {n: mpi.run_json(n, "collectives", path) for n in WORLD_SIZES}


@pytest.fixture(scope="session")
def equivalence(tmp_path_factory):
    if mpi.mpirun.mpiexec_path() is None:
        pytest.skip("no mpiexec (pip install mpich)")
    path = tmp_path_factory.mktemp("equivalence")
    return {n: mpi.run_json(n, "equivalence", path, *EQUIVALENCE_CASES) for n in WORLD_SIZES}


NCCL_CASES = ["mlp:even", "mlp:clip", "cnn:uneven", "cnn:accumulate", "resnet20:even"]


@pytest.fixture(scope="session")
def equivalence_nccl(tmp_path_factory):
    """The equivalence program through the NCCL path, one GPU per rank (on the CuPy stand-in:
    DIST_NN_CUPY_STANDIN=1, whose NCCL runs over MPI, with as many stand-in GPUs as ranks)."""
    if mpi.mpirun.mpiexec_path() is None:
        pytest.skip("no mpiexec (pip install mpich)")
    path = tmp_path_factory.mktemp("equivalence_nccl")
    return {n: mpi.run_json(n, "equivalence", path, "--nccl", *NCCL_CASES,
                            env={"DIST_NN_STANDIN_GPUS": str(n)}) for n in WORLD_SIZES}
