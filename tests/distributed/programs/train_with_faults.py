"""Under mpiexec: `python -m dist_nn.train` with a planted fault, set by the first argument
(the rest goes to the trainer).

    slow-checkpoint MARKER  rank 0 writes MARKER (its pid) and sleeps inside the write of
                            the second checkpoint, before its rename: kill it there
    disk-full               the second checkpoint write fails with ENOSPC
    stuck-open              every rank's open of the data file never returns (a file
                            system that does not answer)
"""
import errno
import os
import sys
import time

from dist_nn import checkpoint, train

writes = []


def slow_checkpoint(marker):
    fsync = checkpoint._fsync

    def slow(path):
        if str(path).endswith(".partial"):
            writes.append(path)
            if len(writes) == 2:
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(600)
        fsync(path)
    checkpoint._fsync = slow


def disk_full():
    write = checkpoint.write

    def failing(path, *args, **kwargs):
        writes.append(path)
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write(path, *args, **kwargs)
    checkpoint.write = failing


def stuck_open():
    from dist_nn.data import dataset

    def never_returns(file):
        time.sleep(600)
    dataset._open = never_returns


if __name__ == "__main__":
    fault, *rest = sys.argv[1:]
    if fault == "slow-checkpoint":
        slow_checkpoint(rest.pop(0))
    elif fault == "disk-full":
        disk_full()
    elif fault == "stuck-open":
        stuck_open()
    sys.exit(train.main(rest))
