"""Under mpiexec -n N: the ranks of a node load a split into one shared cache
(HDF5Split.load_into_memory with the communicator). Rank 0 writes a JSON report: whether the
cache is shared, whether it equals the file, whether a byte written by the last rank is seen
by rank 0 (one memory), each rank's resident and proportional memory (smaps_rollup), and the
/dev/shm files the ranks map. --kill: the last rank then kills itself (SIGKILL), after 2.5 s.

    mpiexec -n N python shared_cache.py OUT.json DATA.h5 [--kill]
"""
import json
import os
import signal
import sys
import time

import numpy as np

from dist_nn import distributed
from dist_nn.data import HDF5Split


def memory_kib():
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:"):
                fields[parts[0][:-1].lower()] = int(parts[1])
    return fields


def shm_files():
    """The /dev/shm files this process maps ("... (deleted)": unlinked, freed with the last
    process that maps it)."""
    with open("/proc/self/maps") as f:
        return sorted({line[line.index("/dev/shm/"):].strip() for line in f
                       if "/dev/shm/" in line})


def main(out, data, kill):
    comm = distributed.setup("mpi", "cpu")
    split = HDF5Split(data)
    cached = split.load_into_memory(2**30, comm)
    fresh = HDF5Split(data)
    equal = bool(np.array_equal(split.cache, fresh.read(np.arange(len(fresh)))))
    last = comm.size - 1
    if comm.rank == last:
        split.cache.reshape(-1)[0] ^= 0xFF
    comm.barrier()
    seen = int(split.cache.reshape(-1)[0]) != int(fresh.read([0]).reshape(-1)[0])
    report = comm.allgather_obj({"cached": cached, "shared": split.shared, "equal": equal,
                                 "seen": seen, "memory": memory_kib(), "shm": shm_files(),
                                 "nbytes": split.nbytes})
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump(report, f)
    comm.barrier()
    if kill and comm.rank == last:
        time.sleep(2.5)  # a job that has run a while: the launcher has seen its segments
        os.kill(os.getpid(), signal.SIGKILL)
    comm.barrier()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--kill" in sys.argv[3:])
