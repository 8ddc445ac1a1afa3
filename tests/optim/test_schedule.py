"""Schedules against torch.optim.lr_scheduler (fixtures, and live when torch is installed)."""
import warnings

import numpy as np
import pytest

from dist_nn import optim
from dist_nn.nn import Parameter
from tests.reference import fixtures
from tests.reference import schedule as reference

TORCH = fixtures.torch_or_none()


@pytest.mark.parametrize("case", list(reference.CASES))
def test_matches_torch_fixture(case):
    expected = fixtures.load("schedule")[case]["lr"]
    np.testing.assert_allclose(reference.our_outputs(case)["lr"], expected, rtol=1e-12)


@pytest.mark.skipif(TORCH is None, reason="live reference needs torch")
@pytest.mark.parametrize("case", list(reference.CASES))
def test_matches_torch_live(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's SequentialLR deprecation chatter
        expected = reference.torch_outputs(TORCH, case)["lr"]
    np.testing.assert_allclose(reference.our_outputs(case)["lr"], expected, rtol=1e-12)


def test_plateau_cases_do_cut_the_lr():
    for case in ("plateau_min_rel", "plateau_max_abs_cooldown"):
        lrs = fixtures.load("schedule")[case]["lr"]
        assert len(set(lrs.tolist())) >= 3, case


def sgd(lr=0.1, **kwargs):
    return optim.SGD([Parameter(np.zeros(2))], lr=lr, **kwargs)


def test_momentum_ramp():
    opt = sgd(momentum=0.9)
    ramp = optim.MomentumRamp(opt, start=0.5, end=0.99, steps=10)
    seen = []
    for _ in range(15):
        seen.append(opt.momentum)
        ramp.step()
    np.testing.assert_allclose(seen[:11], 0.5 + 0.049 * np.arange(11))
    assert seen[11:] == [0.99] * 4
    assert opt.lr == 0.1


def test_cosine_holds_min_lr_after_its_length():
    opt = sgd()
    cosine = optim.CosineDecay(opt, total=4, min_lr=0.01)
    for _ in range(7):
        cosine.step()
    assert opt.lr == pytest.approx(0.01)


@pytest.mark.parametrize("case", list(reference.CASES))
def test_state_dict_resumes_exactly(case):
    build, _, uses_metric = reference.CASES[case]
    metric = reference.metric_for(case)

    def advance(schedule, steps, start):
        for t in range(start, start + steps):
            schedule.step(metric[t]) if uses_metric else schedule.step()

    straight_opt = sgd()
    advance(build(straight_opt), 12, 0)
    half_opt = sgd()
    half = build(half_opt)
    advance(half, 6, 0)
    resumed_opt = sgd()
    resumed = build(resumed_opt)
    resumed.load_state_dict(half.state_dict())
    advance(resumed, 6, 6)
    assert resumed_opt.lr == straight_opt.lr


def test_bad_arguments():
    with pytest.raises(ValueError, match="metric"):
        optim.PlateauDecay(sgd()).step()
    with pytest.raises(ValueError, match="mode"):
        optim.PlateauDecay(sgd(), mode="up")
    with pytest.raises(ValueError, match="PlateauDecay"):
        optim.Warmup(sgd(), steps=3, after=optim.PlateauDecay(sgd()))


def test_a_saved_state_that_lies_is_refused():
    schedule = optim.CosineDecay(sgd(), total=10)
    with pytest.raises(ValueError, match="schedule CosineDecay: t must be a count, got '5'"):
        schedule.load_state_dict({"t": "5", "base": 0.1})
    plateau = optim.PlateauDecay(sgd())
    fresh = plateau.state_dict()
    assert fresh["best"] == float("inf")  # no metric seen yet: still a valid state
    plateau.load_state_dict(fresh)
    with pytest.raises(ValueError, match="best must be a number or"):
        plateau.load_state_dict({**fresh, "best": float("nan")})


def test_a_resumed_schedule_takes_the_new_base_value_from_where_it_stands():
    """A run resumed with a new learning rate: t and the plateau's cuts continue, the base is
    the new one (as if the run had been launched with it)."""
    old, new = optim.CosineDecay(sgd(lr=0.1), total=10), optim.CosineDecay(sgd(lr=0.05), total=10)
    for _ in range(4):
        old.step()
    new.load_state_dict(old.state_dict())
    assert new.t == 4 and new.optimizer.lr == pytest.approx(old.optimizer.lr / 2, rel=1e-12)
    plateau = optim.PlateauDecay(sgd(lr=0.1), patience=0, factor=0.5)
    for metric in (1.0, 2.0):  # no improvement: one cut
        plateau.step(metric)
    assert plateau.current == pytest.approx(0.05)
    resumed = optim.PlateauDecay(sgd(lr=0.2), patience=0, factor=0.5)
    resumed.load_state_dict(plateau.state_dict())
    assert resumed.optimizer.lr == pytest.approx(0.1) and resumed.best == 1.0
