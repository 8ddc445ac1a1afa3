"""The straggler rule and rank 0's view of the ranks' times (dist_nn/monitor/ranks.py); the
real 2-rank runs are in tests/test_straggler.py."""
import pytest

from dist_nn.monitor.ranks import RankTimes, find_straggler


@pytest.mark.parametrize("compute, threshold, straggler", [
    ([0.010, 0.010, 0.010, 0.010], 0.2, None),      # balanced
    ([0.010, 0.010, 0.0121, 0.010], 0.2, 2),        # 21% above the median of 10 ms
    ([0.010, 0.010, 0.0119, 0.010], 0.2, None),     # 19%: within the threshold
    ([0.010, 0.030, 0.010, 0.020, 0.010], 0.2, 1),  # two above: the slowest
    ([0.010, 0.016], 0.2, 1),                       # 2 ranks: the median is their midpoint
    ([0.010, 0.014], 0.2, None),                    # 0.014 / 0.012 = 1.17
    ([0.010, 0.0101, 0.010], 0.0, 1),               # any rank above the median
    ([0.0, 0.0, 0.001], 0.2, None),                 # a median of 0 names no one
    ([0.020], 0.2, None),                           # one rank is its own median
])
def test_the_straggler_computes_more_than_the_threshold_above_the_median(
        compute, threshold, straggler):
    assert find_straggler(compute, threshold) == straggler


def rows(*compute, data_wait=0.0, collective_wait=0.002):
    return [[c, data_wait, collective_wait] for c in compute]


def test_fields_are_seconds_per_step_per_rank_rounded_to_microseconds():
    fields = RankTimes(0.2).fields([[0.0181234567, 0.0, 0.0021], [0.041, 0.0004, 0.0009]])
    assert fields == {"ranks": {"compute": [0.018123, 0.041], "data_wait": [0.0, 0.0004],
                                "collective_wait": [0.0021, 0.0009]},
                      "exposed_comm_s": 0.0015, "straggler": 1}


def test_a_straggler_is_said_once_per_occurrence():
    times = RankTimes(0.2)
    said = [times.news(times.fields(rows(*compute)))
            for compute in ([0.018, 0.018, 0.041], [0.018, 0.018, 0.040],  # appears, stays
                            [0.018, 0.018, 0.018],                          # gone
                            [0.018, 0.018, 0.041],                          # back: said again
                            [0.041, 0.018, 0.018])]                         # another rank
    assert said == [
        "straggler: rank 2 computes 41 ms per step, 2.3x the median of 18 ms (data wait 0 ms, "
        "collective wait 2 ms)", None, None,
        "straggler: rank 2 computes 41 ms per step, 2.3x the median of 18 ms (data wait 0 ms, "
        "collective wait 2 ms)",
        "straggler: rank 0 computes 41 ms per step, 2.3x the median of 18 ms (data wait 0 ms, "
        "collective wait 2 ms)"]
