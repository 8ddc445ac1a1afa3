"""Start-up: rank 0's state everywhere; mismatched ranks refused."""
import pytest

from dist_nn import models
from dist_nn.distributed import fingerprint
from tests.distributed import mpi
from tests.distributed.conftest import WORLD_SIZES


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_broadcast_gives_every_rank_the_same_state(collectives, n):
    seen = collectives[n]["startup"]
    assert seen["identical_after_broadcast"]
    assert len(set(seen["fingerprints"])) == 1


def test_fingerprint_covers_shapes_and_config():
    a = models.build("mlp", (8,), 3, hidden=(12,))
    assert fingerprint(a, {"lr": 0.1}) == fingerprint(models.build("mlp", (8,), 3, hidden=(12,)),
                                                      {"lr": 0.1})
    assert fingerprint(a, {"lr": 0.1}) != fingerprint(a, {"lr": 0.2})
    assert fingerprint(a) != fingerprint(models.build("mlp", (8,), 3, hidden=(16,)))


@mpi.needs_mpi
def test_ranks_with_different_models_are_refused():
    done = mpi.launch(2, "failure", "mismatch", timeout=60)
    assert done.returncode != 0
    assert "ranks [1] differ from rank 0 in their model or configuration" in done.stderr
