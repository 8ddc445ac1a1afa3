"""The explosion guard: divergence on a smoothed loss, spikes that recover pass."""
import math

import pytest

from dist_nn.monitor.guards import ExplosionGuard, TrainingStopped


def feed(guard, losses, lr=0.1):
    """The step (1-based) at which the guard stops, or None."""
    for step, loss in enumerate(losses, start=1):
        try:
            guard.check(loss, step, lr)
        except TrainingStopped as stop:
            assert f"at step {step} " in str(stop)
            return step
    return None


def test_a_spike_that_recovers_is_not_stopped():
    """Adam at a high lr: the loss jumps to 3.5x its first value at step 2, recovers within
    8 steps (the old rule, 3x the first loss, stopped this at step 2)."""
    losses = [2.3, 8.0, 6.5, 4.0, 3.0, 2.5, 2.2, 2.0] + [1.8 - 0.01 * k for k in range(40)]
    assert feed(ExplosionGuard(3.0, floor=math.log(10)), losses) is None


def test_a_diverging_loss_is_stopped_after_the_grace_steps():
    losses = [2.3 * 1.5 ** k for k in range(40)]
    step = feed(ExplosionGuard(3.0, floor=math.log(10)), losses)
    assert step is not None and 10 <= step <= 20


def test_fine_tuning_is_measured_from_ln_c_not_the_tiny_first_loss():
    """A transferred model starts at 0.01 and rises to 1.5 on new data: not diverging."""
    losses = [0.01, 0.5, 1.2, 1.5, 1.4] + [1.3] * 30
    assert feed(ExplosionGuard(3.0, floor=math.log(10)), losses) is None
    assert feed(ExplosionGuard(3.0, floor=0.0), losses) is not None  # the unfloored rule


def test_factor_zero_turns_it_off_and_state_round_trips():
    assert feed(ExplosionGuard(0.0), [1.0 * 10 ** k for k in range(30)]) is None
    guard = ExplosionGuard(3.0, floor=1.0)
    feed(guard, [1.0, 5.0, 6.0])
    twin = ExplosionGuard(3.0, floor=1.0)
    twin.load_state_dict(guard.state_dict())
    assert feed(guard, [7.0] * 20) == feed(twin, [7.0] * 20)


@pytest.mark.parametrize("loss", [math.nan, math.inf])
def test_non_finite_losses_are_left_to_the_nan_check(loss):
    guard = ExplosionGuard(3.0)
    guard.check(loss, 1, 0.1)
    assert guard.reference is None


def test_a_saved_state_that_lies_is_refused():
    guard = ExplosionGuard(3.0)
    with pytest.raises(ValueError, match="explosion guard: average must be a finite number"):
        guard.load_state_dict({"reference": 1.0, "average": "x", "count": 1, "above": 0})
