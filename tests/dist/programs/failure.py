"""Under mpiexec -n N: one rank fails, in one of several ways, while the others carry on
into collectives; the job must end (non-zero) instead of hanging.

    mpiexec -n N python failure.py MODE      MODE: raise | thread | mismatch | stuck
"""
import sys
import threading
import time

import numpy as np

from dist_nn import models, nn, optim
from dist_nn.dist import GradSync, check_same_everywhere, setup

FAILING_RANK, FAILING_STEP = 1, 3


def main(mode):
    comm = setup("mpi", "cpu", watchdog_s=3 if mode == "stuck" else 0)
    hidden = (16,) if mode == "mismatch" and comm.rank == FAILING_RANK else (12,)
    model = models.build("mlp", (8,), 3, hidden=hidden)
    check_same_everywhere(model, comm, config={"lr": 0.1})
    opt = optim.SGD(model.parameters(), lr=0.1)
    sync = GradSync(model, opt.flat, comm)
    loss = nn.SoftmaxCrossEntropy()
    rng = np.random.default_rng(comm.rank)
    for step in range(1000):
        if comm.rank == FAILING_RANK and step == FAILING_STEP:
            if mode == "raise":
                raise RuntimeError(f"planted failure at step {step}")
            if mode == "thread":
                worker = threading.Thread(target=lambda: 1 / 0, name="loader")
                worker.start()
                time.sleep(60)  # the main thread would wait on the dead loader forever
            if mode == "stuck":
                time.sleep(600)  # alive, but never reaches the next collective
        opt.zero_grad()
        loss.forward(model.forward(rng.standard_normal((4, 8))), rng.integers(0, 3, 4))
        model.backward(loss.backward())
        sync.wait()
        opt.step()


if __name__ == "__main__":
    main(sys.argv[1])
