"""Stop signals: kept from the first moment, held during MPI's start-up, agreed per step."""
import subprocess
import sys

from dist_nn.signals import EXIT_INTERRUPTED, EXIT_PREEMPTED, PreemptionSignal
from tests.distributed.mpi import ROOT

PROBE = """
import os, signal, sys, time
from dist_nn.signals import PreemptionSignal, held
print("numpy loaded:", "numpy" in sys.modules)
stops = PreemptionSignal()
with held():
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(0.2)
    print("while held:", stops.received)
print("after:", stops.received, stops.votes())
os.kill(os.getpid(), signal.SIGINT)
os.kill(os.getpid(), signal.SIGINT)  # one Ctrl-C that arrives twice (terminal and mpiexec)
print("interrupted:", PreemptionSignal().received, stops.votes())
time.sleep(2.5)
try:
    os.kill(os.getpid(), signal.SIGINT)
except KeyboardInterrupt:
    print("pressed again: KeyboardInterrupt")
"""


def test_a_signal_is_held_during_start_up_then_kept_and_ctrl_c_twice_forces():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "numpy loaded: False",  # catchable before the heavy imports
        "while held: None",
        "after: SIGUSR1 [1.0, 0.0]",
        "interrupted: SIGINT [0.0, 1.0]",  # an interrupt outranks a preemption
        "pressed again: KeyboardInterrupt"]


def test_the_summed_votes_give_one_decision_on_every_rank():
    assert PreemptionSignal.exit_code([0.0, 0.0]) is None
    assert PreemptionSignal.exit_code([2.0, 0.0]) == EXIT_PREEMPTED == 75
    assert PreemptionSignal.exit_code([1.0, 1.0]) == EXIT_INTERRUPTED == 130


OPEN_MPI_PROBE = """
import os, signal
from dist_nn.signals import PreemptionSignal
stops = PreemptionSignal()
os.kill(os.getpid(), signal.{name})
print(stops.votes(), stops.described())
"""


def test_signals_are_told_apart_where_they_can_be():
    """SIGUSR2 is the launcher's Ctrl-C through Open MPI (an interrupt); a SIGTERM under
    Open MPI's mpirun may be its Ctrl-C: the description says it cannot tell."""
    said = {}
    for name, environment in [("SIGUSR2", {}), ("SIGTERM", {}),
                              ("SIGTERM", {"OMPI_COMM_WORLD_SIZE": "2"})]:
        done = subprocess.run([sys.executable, "-c", OPEN_MPI_PROBE.format(name=name)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60,
                              env={"PYTHONPATH": str(ROOT), **environment})
        assert done.returncode == 0, done.stderr
        said[name, bool(environment)] = done.stdout.strip()
    assert said["SIGUSR2", False] == \
        "[0.0, 1.0] Ctrl-C, passed on by the launcher as SIGUSR2"
    assert said["SIGTERM", False] == "[1.0, 0.0] SIGTERM"
    assert said["SIGTERM", True] == (
        "[1.0, 0.0] SIGTERM: a preemption, or Ctrl-C on Open MPI's mpirun, which sends "
        "SIGTERM for both; this cannot tell which")
