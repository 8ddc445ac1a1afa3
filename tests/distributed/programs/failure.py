"""Under mpiexec -n N: one rank fails, in one of several ways, while the others carry on
into collectives; the job must end (non-zero) instead of hanging.

    mpiexec -n N python failure.py MODE
        raise | thread | mismatch | stuck      rank 1 raises, in a thread, ... or hangs
                                               (raise: each rank first prints the files in
                                               /dev/shm it maps)
        sys_exit | os_exit | kill              rank 1 leaves with exit status 0, or is killed
        together                               every rank calls sys.exit(0) at the same step:
                                               a normal end (exit 0)
        finish_apart                           every rank calls allow_exit(); then rank 0 works
                                               longer than the exit grace: a normal end
"""
import os
import signal
import sys
import threading
import time

import numpy as np

from dist_nn import models, nn, optim
from dist_nn.distributed import GradSync, allow_exit, check_same_everywhere, setup
from dist_nn.distributed.process import EXIT_GRACE_S

FAILING_RANK, FAILING_STEP = 1, 3


def main(mode):
    comm = setup("mpi", "cpu", watchdog_s={"stuck": 3, "kill": 120}.get(mode, 0))
    hidden = (16,) if mode == "mismatch" and comm.rank == FAILING_RANK else (12,)
    model = models.build("mlp", (8,), 3, hidden=hidden)
    check_same_everywhere(model, comm, config={"lr": 0.1})
    opt = optim.SGD(model.parameters(), lr=0.1)
    sync = GradSync(model, opt.flat, comm)
    loss = nn.SoftmaxCrossEntropy()
    rng = np.random.default_rng(comm.rank)
    for step in range(1000):
        if mode == "raise" and step == FAILING_STEP - 1:
            maps = open("/proc/self/maps").read().splitlines()
            print("shared memory:", *{line[line.find("/dev/shm/"):] for line in maps
                                      if "/dev/shm/" in line}, flush=True)
        if comm.rank == FAILING_RANK and step == FAILING_STEP:
            if mode == "raise":
                raise RuntimeError(f"planted failure at step {step}")
            if mode == "thread":
                worker = threading.Thread(target=lambda: 1 / 0, name="loader")
                worker.start()
                time.sleep(60)  # the main thread would wait on the dead loader forever
            if mode == "stuck":
                time.sleep(600)  # alive, but never reaches the next collective
            if mode == "sys_exit":
                sys.exit(0)
            if mode == "os_exit":
                os._exit(0)
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        if step == FAILING_STEP and mode == "together":
            sys.exit(0)
        if step == FAILING_STEP and mode == "finish_apart":
            allow_exit()
            if comm.rank == 0:
                time.sleep(EXIT_GRACE_S + 2)  # e.g. writing the final checkpoint
            return
        opt.zero_grad()
        loss.forward(model.forward(rng.standard_normal((4, 8))), rng.integers(0, 3, 4))
        model.backward(loss.backward())
        sync.wait()
        opt.step()


if __name__ == "__main__":
    main(sys.argv[1])
