"""Progress of one epoch on rank 0: a tqdm bar on a terminal, plain log lines otherwise (batch
jobs, where a redrawn bar would fill the log with carriage returns)."""
import sys

from tqdm import tqdm

def plural(count, noun):
    """`1 epoch`, `2 epochs`: a count with its noun (plain English plurals)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# how the usual values read; other values print as `name value`
FORMATS = {"loss": "loss {:.4f}", "accuracy": "acc {:.4f}", "lr": "lr {:g}",
           "samples_per_s": "{:.0f} samples/s"}


class Progress:
    """update(step_in_epoch, loss=..., accuracy=..., lr=..., samples_per_s=...) after each step,
    step_in_epoch counting from 1 to total_steps; close() at the end of the epoch. Steps are
    shown as the run numbers them (metrics.jsonl, guard messages): `first_step` is the run's
    step count before the epoch's first step.

    Without a terminal a line `epoch 3 step 1524 (120/468) loss 0.4123 acc 0.8734 lr 0.05
    1234 samples/s` is printed every `every` steps (default: about ten per epoch) and for the
    last step seen. enabled=False (ranks other than 0) does nothing.
    """

    def __init__(self, total_steps, epoch, enabled=True, stream=sys.stderr, every=None,
                 first_step=0):
        self.total_steps, self.epoch, self.enabled = total_steps, epoch, enabled
        self.first_step = first_step
        self.stream = stream
        self.every = every or max(1, total_steps // 10)
        self.bar = None
        if enabled and stream.isatty():
            self.bar = tqdm(total=total_steps, desc=f"epoch {epoch}", unit="step", file=stream,
                            dynamic_ncols=True)  # its postfix names the run's step
        self.step, self.values, self.printed_step = 0, {}, 0

    def update(self, step_in_epoch, **values):
        if not self.enabled:
            return
        self.step, self.values = step_in_epoch, values
        if self.bar is not None:
            self.bar.update(step_in_epoch - self.bar.n)
            self.bar.set_postfix_str(f"step {self.first_step + step_in_epoch} "
                                     + _format(values), refresh=False)
        elif step_in_epoch % self.every == 0 or step_in_epoch == self.total_steps:
            self._print_line()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.step != self.printed_step:
            self._print_line()  # an epoch cut short (e.g. by train.max_steps) still ends on a line

    def _print_line(self):
        print(f"epoch {self.epoch} step {self.first_step + self.step} "
              f"({self.step}/{self.total_steps}) {_format(self.values)}", file=self.stream,
              flush=True)
        self.printed_step = self.step


def _format(values):
    return " ".join(FORMATS[name].format(value) if name in FORMATS else f"{name} {value:.4g}"
                    for name, value in values.items())
