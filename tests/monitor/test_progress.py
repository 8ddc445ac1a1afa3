import io

from dist_nn.monitor import Progress, plural

VALUES = {"loss": 0.41234, "accuracy": 0.87344, "lr": 0.05, "samples_per_s": 1234.4}


def run_epoch(progress, steps):
    for step in range(1, steps + 1):
        progress.update(step, **VALUES)
    progress.close()


def test_plain_lines_every_few_steps_and_at_the_end():
    stream = io.StringIO()
    run_epoch(Progress(total_steps=25, epoch=3, stream=stream, every=10, first_step=100), 25)
    assert stream.getvalue().splitlines() == [
        f"epoch 3 step {100 + step} ({step}/25) loss 0.4123 acc 0.8734 lr 0.05 1234 samples/s"
        for step in (10, 20, 25)]


def test_an_epoch_cut_short_ends_on_its_last_step():
    stream = io.StringIO()
    run_epoch(Progress(total_steps=25, epoch=0, stream=stream, every=10), 13)
    assert [line.split(" loss")[0] for line in stream.getvalue().splitlines()] == [
        "epoch 0 step 10 (10/25)", "epoch 0 step 13 (13/25)"]


def test_other_values_are_printed_by_name():
    stream = io.StringIO()
    progress = Progress(total_steps=1, epoch=0, stream=stream)
    progress.update(1, loss=1.0, grad_norm=12.3456)
    progress.close()
    assert stream.getvalue() == "epoch 0 step 1 (1/1) loss 1.0000 grad_norm 12.35\n"


def test_disabled_prints_nothing():
    stream = io.StringIO()
    run_epoch(Progress(total_steps=25, epoch=0, enabled=False, stream=stream, every=1), 25)
    assert stream.getvalue() == ""


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_bar_with_the_values():
    stream = Terminal()
    run_epoch(Progress(total_steps=25, epoch=2, stream=stream), 25)
    output = stream.getvalue()
    assert "epoch 2" in output and "25/25" in output
    assert "loss 0.4123 acc 0.8734" in output


def test_plural_says_1_epoch_not_1_epochs():
    assert [plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
