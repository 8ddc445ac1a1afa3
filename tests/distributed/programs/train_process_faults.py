"""Under mpiexec: `python -m dist_nn.train` (run as `-m` runs it) with a planted process
fault, set by the first arguments (the rest goes to the trainer).

    leave HOW STEP MARKER   rank 1 leaves at training step STEP, by HOW (sys_exit | os_exit),
                            after writing the time to MARKER
    signal SIG PHASE        rank 1 (every rank under a launcher without PMI_RANK) sends itself
                            SIG during start-up: PHASE imports (NumPy's import), mpi (MPI's
                            start-up) or data (the opening of the data file)
"""
import os
import runpy
import signal
import sys
import time

PHASES = {"imports": "numpy", "mpi": "mpi4py.MPI"}  # the module whose import is the moment


class SignalOnImport:
    """A meta path finder that sends the signal when `module` is first imported."""

    def __init__(self, module, number):
        self.module, self.number = module, number

    def find_spec(self, name, path=None, target=None):
        if name == self.module:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), self.number)
        return None


def signal_on_data_open(number):
    import h5py
    init, sent = h5py.File.__init__, []

    def opening(self, *args, **kwargs):
        if not sent:  # the first HDF5 file a rank opens is its data
            sent.append(True)
            os.kill(os.getpid(), number)
        init(self, *args, **kwargs)
    h5py.File.__init__ = opening


def leave_at(how, step, marker):
    from dist_nn.distributed import grad_sync
    wait, done = grad_sync.GradSync.wait, []

    def counting(self):
        done.append(1)
        if len(done) == step:
            with open(marker, "w") as f:
                f.write(str(time.time()))
            sys.exit(0) if how == "sys_exit" else os._exit(0)
        return wait(self)
    grad_sync.GradSync.wait = counting


if __name__ == "__main__":
    fault, what, when, *rest = sys.argv[1:]
    rank1 = os.environ.get("PMI_RANK", "1") == "1"
    if fault == "leave":
        marker, rest = rest[0], rest[1:]
        if rank1:
            leave_at(what, int(when), marker)
    if fault == "signal" and rank1:
        number = signal.Signals[what]
        if when == "data":
            signal_on_data_open(number)
        else:
            sys.meta_path.insert(0, SignalOnImport(PHASES[when], number))
    sys.argv = ["dist_nn.train", *rest]
    runpy.run_module("dist_nn.train", run_name="__main__", alter_sys=True)
