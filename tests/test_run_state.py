"""The Trainer's state parts: position, watches and step totals, each saving and loading
itself, and refusing a saved state that lies."""
import pytest

from dist_nn import saved
from dist_nn.distributed import LocalCommunicator
from dist_nn.run_state import TIMES, Position, RunningTotals, StepTotals, Watch


def test_a_position_resumes_at_the_last_whole_step_of_another_global_batch():
    position = Position(global_batch=64, accumulate=2, epoch=3, step=40, micro_batches=10)
    assert position.steps_in_epoch == 5
    state = position.state_dict()
    assert state == {"epoch": 3, "step": 40, "samples": 640}
    same = Position(64, 2)
    same.load_state_dict(state)
    assert same == position
    wider = Position(global_batch=96, accumulate=2)  # 640 samples: 3 whole steps of 192
    wider.load_state_dict(state)
    assert (wider.epoch, wider.step, wider.micro_batches, wider.steps_in_epoch) == (3, 40, 6, 3)
    wider.next_epoch()
    assert (wider.epoch, wider.micro_batches) == (4, 0)


@pytest.mark.parametrize("state, message", [
    ({"epoch": 1, "step": -1, "samples": 0}, "position: step must be a count, got '-1'"),
    ({"epoch": 1, "step": True, "samples": 0}, "position: step must be a count"),
    ({"epoch": 1, "step": 2}, "position lacks the entry 'samples'"),
    ([1, 2, 3], "position must be an object"),
])
def test_a_position_that_lies_is_refused(state, message):
    with pytest.raises(ValueError, match=message):
        Position(64).load_state_dict(state)


def test_a_watch_keeps_the_best_and_counts_stale_epochs():
    loss = Watch("val_loss", min_delta=0.1)
    assert loss.update({"val_loss": 1.0})           # the first value is the best so far
    assert not loss.update({"val_loss": 0.95})      # better, but not by more than min_delta
    assert loss.update({"val_loss": 0.8}) and (loss.value, loss.stale) == (0.8, 0)
    assert not loss.update({"val_loss": 0.9}) and loss.stale == 1
    accuracy = Watch("train_accuracy")
    assert accuracy.update({"train_accuracy": 0.5}) and accuracy.update({"train_accuracy": 0.6})
    assert not accuracy.update({"train_accuracy": 0.6}) and accuracy.stale == 1
    again = Watch("val_loss", min_delta=0.1)
    again.load_state_dict(loss.state_dict())
    assert again == loss
    with pytest.raises(ValueError, match=r"best: value must be a finite number or null, got 'nan'"):
        again.load_state_dict({"value": float("nan"), "stale": 0}, "best")


def test_step_totals_reduce_into_running_totals_that_save_themselves():
    step = StepTotals(samples=4, loss=0.5, correct=3, preempt_votes=1)
    total = step.reduced(LocalCommunicator())
    assert total == step and total.preempt_votes == 1
    epoch = RunningTotals()
    epoch += RunningTotals.of_step(total, 2.0, dict.fromkeys(TIMES, 0.25))
    epoch += RunningTotals.of_step(StepTotals(samples=4, loss=1.0, correct=1), None,
                                   dict.fromkeys(TIMES, 0.5))
    assert (epoch.mean("loss"), epoch.mean("correct")) == (0.75, 0.5)
    assert epoch.mean_grad_norm() == 2.0 and epoch.steps_taken == 1  # the skipped step: none
    assert epoch.seconds() == 3.0 and epoch.compute == 0.75
    assert RunningTotals().mean_grad_norm() is None
    again = RunningTotals()
    again.load_state_dict(epoch.state_dict())
    assert again == epoch
    with pytest.raises(ValueError, match="epoch totals: compute must be a finite number"):
        again.load_state_dict({**epoch.state_dict(), "compute": "1"})
    with pytest.raises(ValueError, match="epoch totals lacks the entry 'samples'"):
        again.load_state_dict({"loss": 1.0})


def test_a_value_that_is_not_finite_never_improves():
    watch = Watch("train_loss")
    assert not watch.update({"train_loss": float("nan")})
    assert (watch.value, watch.stale) == (None, 1)  # nothing NaN is kept (or saved)
    assert watch.update({"train_loss": 2.0}) and watch.value == 2.0


def test_saved_state_is_checked_entry_by_entry():
    state = {"t": 3, "base": 0.1}
    assert saved.checked(state, "schedule", t=saved.COUNT, base=saved.NUMBER) is state
    for bad, message in [({"t": 3, "base": "0.1"}, "schedule: base must be a finite number"),
                         ({"t": 3.0, "base": 0.1}, "schedule: t must be a count"),
                         ({"base": 0.1}, "schedule lacks the entry 't'")]:
        with pytest.raises(ValueError, match=message):
            saved.checked(bad, "schedule", t=saved.COUNT, base=saved.NUMBER)
    assert saved.NUMBER_OR_INFINITY[0](float("inf")) and not saved.NUMBER_OR_INFINITY[0](
        float("nan"))
