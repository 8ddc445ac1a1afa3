"""The NCCL path: N ranks, one GPU each, equal one process with the N-times-larger batch
(float64, SyncBN through NCCL as the gradient buckets). Runs on GPUs, or without one on the
CuPy stand-in (DIST_NN_CUPY_STANDIN=1), whose NCCL carries the collectives over MPI."""
import pytest

from dist_nn import backend
from tests.distributed.conftest import NCCL_CASES, WORLD_SIZES

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not backend.gpu_available(), reason="needs CuPy and GPUs (or DIST_NN_CUPY_STANDIN=1)")]


@pytest.mark.parametrize("ranks", WORLD_SIZES)
@pytest.mark.parametrize("case", NCCL_CASES)
def test_n_ranks_through_nccl_equal_one_process(equivalence_nccl, ranks, case):
    result = equivalence_nccl[ranks][case]
    assert len(result["errors"]) == 20
    assert max(result["errors"]) < 1e-10, result["errors"]
    assert result["ranks_identical"]
    assert (result["communicator"], result["device"]) == ("NCCLCommunicator", "gpu")
