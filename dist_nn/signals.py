"""Stop signals: preemption (SIGUSR1, SIGTERM: SLURM's warning before a time limit or
preemption) and interrupt (SIGINT, Ctrl-C; SIGUSR2: Ctrl-C that dist-nn-mpirun passes on
through Open MPI's mpiexec, which cannot pass SIGINT) only set a flag; the trainer checkpoints at the next
step boundary, once all ranks agree, and exits 75 (requeue) or 130.

This module imports nothing heavy, so that a run can catch the signals before NumPy, h5py and
MPI are loaded: a signal that arrives during start-up is kept, not fatal, and not lost.
"""
import contextlib
import os
import signal
import time

PREEMPTION = ("SIGUSR1", "SIGTERM")
INTERRUPT = ("SIGINT", "SIGUSR2")
EXIT_PREEMPTED = 75    # EX_TEMPFAIL: the job script requeues
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
FORCE_AFTER_S = 2.0    # a second Ctrl-C this much later stops at once (one press can arrive twice)
SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class PreemptionSignal:
    """The process's stop signals. Instantiating installs the handlers (idempotent); every
    instance sees the same state, so a signal caught at start-up is seen by the trainer.

    Per step, each rank contributes `votes()` to the step's summed allreduce, and
    `exit_code(summed)` turns the sum into the decision, the same on every rank."""
    received = None   # the first stop signal's name, process-wide
    _at = None        # when SIGINT first came
    installed = False

    def __init__(self):
        if not PreemptionSignal.installed:
            for number in SIGNALS:
                signal.signal(number, PreemptionSignal._note)
            PreemptionSignal.installed = True

    @staticmethod
    def _note(number, frame):
        name = signal.Signals(number).name
        if name == "SIGINT":
            if PreemptionSignal._at is not None and time.monotonic() - PreemptionSignal._at \
                    > FORCE_AFTER_S:
                raise KeyboardInterrupt  # asked twice: stop now, without a checkpoint
            PreemptionSignal._at = PreemptionSignal._at or time.monotonic()
        if PreemptionSignal.received is None or name in INTERRUPT:
            PreemptionSignal.received = name  # an interrupt outranks a preemption

    def votes(self):
        """This rank's [preemption, interrupt] flags, to be summed over ranks every step."""
        return [float(self.received in PREEMPTION), float(self.received in INTERRUPT)]

    def described(self):
        """The signal received, for the message that says why the run stopped."""
        if self.received == "SIGUSR2":
            return "Ctrl-C, passed on by the launcher as SIGUSR2"
        if self.received == "SIGTERM" and "OMPI_COMM_WORLD_SIZE" in os.environ:
            return ("SIGTERM: a preemption, or Ctrl-C on Open MPI's mpirun, which sends "
                    "SIGTERM for both; this cannot tell which")
        return self.received

    @staticmethod
    def exit_code(summed):
        """From the summed votes: None (train on), 130 when any rank was interrupted (a person
        asked to stop: no requeue), else 75 (preempted: requeue)."""
        preempted, interrupted = summed
        if interrupted:
            return EXIT_INTERRUPTED
        return EXIT_PREEMPTED if preempted else None


def stopped(code):
    """How a run stopped with exit `code` is said: interrupted (130) or preempted (75)."""
    return "interrupted" if code == EXIT_INTERRUPTED else "preempted"


@contextlib.contextmanager
def held():
    """Hold the stop signals back while a library starts that a signal could break (MPI's
    start-up: interrupted system calls; its helper threads inherit the blocked mask, so that
    signals later reach a Python thread). A held signal is delivered on leaving."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def block_in_this_thread():
    """For helper threads: leave the stop signals to the main thread, which handles them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
