"""SyncBN (BatchNorm2d with a communicator) over uneven per-rank batches."""
import pytest

from tests.distributed.conftest import WORLD_SIZES


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_uneven_batches_use_exact_global_statistics(collectives, n):
    seen = collectives[n]["sync_bn"]
    assert seen["forward_error"] < 1e-12  # against the global batch's mean and variance
    assert seen["running_identical"] and seen["running_mean_error"] < 1e-12
    assert seen["eval_calls"] == 0  # eval mode communicates nothing
