"""Exact totals: sums and counts over uneven shards."""
from dataclasses import dataclass

import pytest

from dist_nn.distributed import LocalCommunicator, Totals
from tests.distributed.conftest import WORLD_SIZES


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_uneven_shards_weigh_each_sample_once(collectives, n):
    seen = collectives[n]["metrics"]
    assert seen["reduced"] == pytest.approx(seen["expected"])


@dataclass
class Seen(Totals):
    loss: float = 0.0
    correct: float = 0.0


def test_totals_on_one_process():
    totals = Seen(samples=3, loss=6.0, correct=2)
    totals += Seen(samples=1, loss=2.0, correct=1)
    total = totals.reduced(LocalCommunicator())
    assert total == Seen(samples=4, loss=8.0, correct=3) and total is not totals
    assert (total.mean("loss"), total.mean("correct")) == (2.0, 0.75)
    assert Seen().mean("loss") != Seen().mean("loss")  # NaN without samples
