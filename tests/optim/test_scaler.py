"""LossScaler (dist_nn/optim/scaler.py) against torch.amp.GradScaler."""
import numpy as np
import pytest

from dist_nn import optim
from dist_nn.nn import Parameter
from tests.reference import recipe_check as check


@check.SOURCES
def test_scale_trajectory_matches_grad_scaler(source):
    """The same fixed sequence of overflow and clean steps (growth every 3 clean steps): the
    same scale after every step, and the same weights (skipped steps leave them alone)."""
    ours, _ = check.compare(source, "scaler.", 1e-6)
    assert len(set(ours["scaler.scales"])) > 3  # grew and backed off
    assert ours["scaler.defaults"].tolist() == [2.0**16, 2000]


def test_skipped_step_leaves_weights_and_counts():
    w = Parameter(np.ones(3, dtype=np.float32))
    sgd = optim.SGD([w], lr=0.1)
    scaler = optim.LossScaler()
    w.grad[...] = [1.0, np.nan, 2.0]
    assert scaler.step(sgd) is False
    scaler.update()
    np.testing.assert_array_equal(w.data, 1.0)
    assert (scaler.scale, scaler.skipped, sgd.step_count) == (2.0**15, 1, 0)


def test_state_dict_round_trip():
    scaler = optim.LossScaler(growth_interval=5)
    w = Parameter(np.ones(2, dtype=np.float32))
    for _ in range(3):
        scaler.step(optim.SGD([w], lr=0.1))
        scaler.update()
    other = optim.LossScaler(growth_interval=5)
    other.load_state_dict(scaler.state_dict())
    assert other.state_dict() == scaler.state_dict() == {"scale": 2.0**16, "growth_tracker": 3}


def test_unscale_twice_in_a_step_is_an_error():
    w = Parameter(np.ones(2, dtype=np.float32))
    scaler = optim.LossScaler()
    scaler.unscale([w])
    with pytest.raises(RuntimeError, match="already called this step"):
        scaler.unscale([w])


@pytest.mark.parametrize("state, message", [
    ({"scale": float("nan"), "growth_tracker": 0}, "scale must be a finite number > 0"),
    ({"scale": 0.0, "growth_tracker": 0}, "scale must be a finite number > 0"),
    ({"scale": 2.0, "growth_tracker": "3"}, "growth_tracker must be a count"),
])
def test_a_saved_state_that_lies_is_refused(state, message):
    scaler = optim.LossScaler()
    with pytest.raises(ValueError, match=f"loss scaler: {message}"):
        scaler.load_state_dict(state)
    assert scaler.state_dict() == {"scale": 2.0**16, "growth_tracker": 0}
