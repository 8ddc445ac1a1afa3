"""The Trainer's own state, in small parts: where the run is (Position), what it watches
(Watch: the best checkpoint's metric, early stopping's) and the totals of its steps
(StepTotals, one step's over all ranks; RunningTotals, an epoch's or a log window's). The
parts that a checkpoint holds save and load themselves (state_dict() / load_state_dict(),
checked with dist_nn.saved), as the schedules, the guard, the loss scaler and the EMA do; the
Trainer's state_dict() is theirs together (docs/design.md §3.5)."""
import math
from dataclasses import asdict, dataclass, fields

from . import saved
from .config import lower_is_better
from .distributed import Totals


@dataclass
class Position:
    """Where a run is: epochs completed, optimizer steps taken, micro-batches done in the
    current epoch. A step is `accumulate` micro-batches of `global_batch` samples each. Saved
    in global samples, so that a run resumes with another global batch (another world size)
    at the last whole step within the epoch."""
    global_batch: int
    accumulate: int = 1
    epoch: int = 0
    step: int = 0
    micro_batches: int = 0

    @property
    def steps_in_epoch(self):
        """Optimizer steps taken in the current epoch."""
        return self.micro_batches // self.accumulate

    def next_epoch(self):
        self.epoch += 1
        self.micro_batches = 0

    def state_dict(self):
        return {"epoch": self.epoch, "step": self.step,
                "samples": self.micro_batches * self.global_batch}

    def load_state_dict(self, state):
        state = saved.checked(state, "position", epoch=saved.COUNT, step=saved.COUNT,
                              samples=saved.COUNT)
        self.epoch, self.step = state["epoch"], state["step"]
        whole_steps = state["samples"] // (self.global_batch * self.accumulate)
        self.micro_batches = whole_steps * self.accumulate


@dataclass
class Watch:
    """The best value so far of a metric (lower is better for a loss, higher for an
    accuracy), and how many epochs in a row have not improved on it by more than min_delta.
    A value that is not finite never improves."""
    metric: str
    min_delta: float = 0.0
    value: float = None
    stale: int = 0

    def update(self, metrics):
        """Account an epoch's metrics; True when the watched one improved on the best."""
        value = metrics[self.metric]
        if not math.isfinite(value):
            improved = False
        elif self.value is None:
            improved = True
        elif lower_is_better(self.metric):
            improved = value < self.value - self.min_delta
        else:
            improved = value > self.value + self.min_delta
        if improved:
            self.value, self.stale = value, 0
        else:
            self.stale += 1
        return improved

    def state_dict(self):
        return {"value": self.value, "stale": self.stale}

    def load_state_dict(self, state, part="watch"):
        state = saved.checked(state, part, value=saved.NUMBER_OR_NONE, stale=saved.COUNT)
        self.value, self.stale = state["value"], state["stale"]


@dataclass
class StepTotals(Totals):
    """One optimizer step, summed over ranks in the step's one small allreduce: the global
    mean loss (each rank adds its share), correct predictions, samples, and the stop-signal
    votes, so that every rank learns of a signal on any rank after the same step."""
    loss: float = 0.0
    correct: float = 0.0
    preempt_votes: float = 0.0
    interrupt_votes: float = 0.0


# where a step's time goes, in seconds (the epoch record's time split)
TIMES = ("data_wait", "compute", "allreduce_wait", "optimizer")


@dataclass
class RunningTotals(Totals):
    """Steps' totals over an epoch or a log window: losses summed over samples, correct
    predictions, the gradient norms of the steps taken (an fp16 overflow skips one) and the
    seconds of TIMES. The epoch's are saved, so that a resumed run reports its epoch whole."""
    loss: float = 0.0
    correct: float = 0.0
    grad_norm: float = 0.0
    steps_taken: float = 0.0
    data_wait: float = 0.0
    compute: float = 0.0
    allreduce_wait: float = 0.0
    optimizer: float = 0.0

    @classmethod
    def of_step(cls, step, grad_norm, timing):
        """A synchronized step's totals (StepTotals), its gradient norm (None: skipped) and
        its time split ({name in TIMES: seconds})."""
        return cls(step.samples, loss=step.loss * step.samples, correct=step.correct,
                   grad_norm=grad_norm or 0.0, steps_taken=float(grad_norm is not None),
                   **timing)

    def seconds(self):
        """The time the steps took."""
        return sum(getattr(self, name) for name in TIMES)

    def mean_grad_norm(self):
        return self.grad_norm / self.steps_taken if self.steps_taken else None

    def state_dict(self):
        return asdict(self)

    def load_state_dict(self, state):
        state = saved.checked(state, "epoch totals",
                              **{f.name: saved.NUMBER for f in fields(self)})
        for f in fields(self):
            setattr(self, f.name, float(state[f.name]))
