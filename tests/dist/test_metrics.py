"""Exact metrics: sums and counts over uneven shards."""
import pytest

from dist_nn.dist import LocalCommunicator, Totals
from tests.dist.conftest import WORLD_SIZES


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_uneven_shards_weigh_each_sample_once(collectives, n):
    seen = collectives[n]["metrics"]
    assert seen["reduced"] == pytest.approx(seen["expected"])


def test_totals_on_one_process():
    totals = Totals(("loss", "correct"))
    totals.add(3, loss=6.0, correct=2)
    totals.add(1, loss=2.0, correct=1)
    assert totals.reduce(LocalCommunicator()) == {"loss": 2.0, "correct": 0.75, "count": 4}
