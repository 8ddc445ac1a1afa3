"""The console scripts (pyproject.toml): light entry points, so that a signal during a
command's imports (NumPy, h5py, MPI: seconds on a cold node) is handled as `python -m`
handles it. dist-nn-train installs the stop handlers first of all (a stop signal is kept and
the run stops before its first step, nothing lost); dist-nn-mpirun keeps a stop signal that
comes before it started the job (and then does not start it); for every command a Ctrl-C
that is not handled otherwise ends it with 130 and one line, no traceback."""
import importlib
import sys

from .signals import EXIT_INTERRUPTED, PreemptionSignal


def _main(module, script):
    try:
        return importlib.import_module(module).main()
    except KeyboardInterrupt:
        print(f"{script}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def train():
    PreemptionSignal()
    return _main("dist_nn.train", "dist-nn-train")


def mpirun():
    from .launch.job import note_stop_signals
    note_stop_signals()
    return _main("dist_nn.launch.mpirun", "dist-nn-mpirun")


def evaluate():
    return _main("dist_nn.evaluate", "dist-nn-evaluate")


def convert():
    return _main("dist_nn.datasets.__main__", "dist-nn-convert")


def search():
    return _main("dist_nn.launch.search", "dist-nn-search")
