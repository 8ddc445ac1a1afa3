"""What would fail on a GPU cluster's first contact, tried on the CuPy stand-in (in fresh
processes, so the suite needs neither a GPU nor DIST_NN_CUPY_STANDIN): a GPU, NCCL or a
CUDA-aware MPI asked for but missing is one message and exit 2 on every rank; each rank's GPU
is chosen from the launcher's local rank before MPI starts; a device buffer reaches a
CUDA-aware MPI only after its stream is synchronised."""
import json
import re
import sys
import textwrap
import time

import pytest

from launch import mpirun
from tests.test_cupy_standin import ROOT, on_standin, standin_env

needs_mpi = pytest.mark.skipif(mpirun.mpiexec_path() is None,
                               reason="no mpiexec (pip install mpich)")


def train_two_ranks(tmp_path, *overrides, **env):
    return mpirun.run(2, [sys.executable, "-m", "dist_nn.train", "train.device=gpu",
                          "train.max_steps=2", f"log.run_dir={tmp_path / 'run'}", *overrides],
                      env=standin_env(**env), capture_output=True, text=True, timeout=240,
                      cwd=ROOT, check=False)


@needs_mpi
@pytest.mark.parametrize("overrides, env, said", [
    (["train.comm=nccl"], {"DIST_NN_STANDIN_NCCL": "0", "DIST_NN_STANDIN_GPUS": "2"},
     "NCCL"),
    (["train.comm=mpi"], {"DIST_NN_STANDIN_GPUS": "0"}, "no CUDA GPU is usable"),
    (["train.comm=mpi", "train.cuda_aware=on"], {"DIST_NN_STANDIN_GPUS": "2"},
     "does not take CUDA device buffers"),
], ids=["nccl", "gpu", "cuda_aware"])
def test_what_is_asked_for_but_missing_is_one_message_and_exit_2(tmp_path, overrides, env,
                                                                  said):
    done = train_two_ranks(tmp_path, *overrides, **env)
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if said in line]
    assert len(lines) == 1, output  # said once, by rank 0
    assert "Traceback" not in output, output
    assert not (tmp_path / "run").exists()  # refused before anything was written


PLACEMENT = """
    import json, sys
    from cupy import _standin
    from dist_nn.distributed import comm, process

    seen = {}
    start = comm.MPICommunicator.__init__

    def starting(self, *args, **kwargs):  # the device in use when MPI starts
        seen.setdefault("at_mpi_start", _standin.cuda_initialised_on())
        start(self, *args, **kwargs)

    comm.MPICommunicator.__init__ = starting
    world = process.setup("mpi", "gpu")
    import cupy
    cupy.ones(3).sum()
    seen.update(rank=world.local_rank, used=_standin.devices_used())
    sys.stdout.write(json.dumps(seen) + "\\n")
    sys.stdout.flush()
    process.allow_exit()
"""


@needs_mpi
def test_each_rank_uses_the_gpu_of_its_local_rank_chosen_before_mpi_starts():
    done = mpirun.run(2, [sys.executable, "-c", textwrap.dedent(PLACEMENT)],
                      env=standin_env(DIST_NN_STANDIN_GPUS="2"), capture_output=True,
                      text=True, timeout=240, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    # one object a rank; the launcher may join the ranks' lines
    ranks = sorted((json.loads(found) for found in re.findall(r"\{[^{}]*\}", done.stdout)),
                   key=lambda seen: seen["rank"])
    assert [seen["used"] for seen in ranks] == [[0], [1]]  # rank 1 never touched GPU 0
    assert [seen["at_mpi_start"] for seen in ranks] == [0, 1]


def test_device_buffers_reach_a_cuda_aware_mpi_only_after_a_sync():
    """In the stand-in's strict mode a buffer with unsynchronised work is refused where MPI
    reads it (its __cuda_array_interface__): dist_nn's communicator synchronises first."""
    on_standin("""
        import cupy
        from cupy import _standin
        from dist_nn.distributed.comm import MPICommunicator
        comm = MPICommunicator(cuda_aware=True)
        _standin.strict_handoff(True)
        x = cupy.ones(4)
        x *= 3  # queued on the current stream
        comm.allreduce(x)
        y = cupy.arange(4.0)
        y += 1
        comm.iallreduce(y).wait()
        out = cupy.zeros(4)
        z = cupy.ones(4)
        z *= 2
        comm.ireduce_scatter(z, out).wait()
        assert x.tolist() == [3.0] * 4 and y.tolist() == [1.0, 2.0, 3.0, 4.0]
        assert out.tolist() == [2.0] * 4
        w = cupy.ones(2)
        w *= 5  # without dist_nn's synchronisation, the hand-off is refused
        try:
            comm.comm.Allreduce(comm.MPI.IN_PLACE, w)
        except TypeError:
            pass
        else:
            raise AssertionError("an unsynchronised buffer reached MPI")
    """)


HUNG_ON_THE_GPU = """
    import time
    import cupy
    from cupy import _standin
    from dist_nn.distributed import process

    world = process.setup("nccl", "gpu", watchdog_s=2)
    x = cupy.ones(4)
    world.allreduce(x)
    assert float(x.sum()) == 8.0
    if world.rank == 0:
        _standin.stall(world.comm.stream)  # the NCCL stream's next work never finishes
    world.allreduce(x)  # returns at once: NCCL queues it on the GPU
    if world.rank == 0:
        float(x.sum())  # waits for ever
    time.sleep(60)  # rank 1: alive, outside any collective
"""


@needs_mpi
def test_the_watchdog_times_a_collective_that_hangs_on_the_gpu():
    """An NCCL collective does not block the host; one that never completes shows as a host
    sync that never returns. The watchdog times it from its completion event."""
    start = time.monotonic()
    done = mpirun.run(2, [sys.executable, "-c", textwrap.dedent(HUNG_ON_THE_GPU)],
                      env=standin_env(DIST_NN_STANDIN_GPUS="2"), capture_output=True,
                      text=True, timeout=60, cwd=ROOT, check=False)
    assert done.returncode != 0
    assert "[rank 0/2] watchdog: collective #2 (allreduce, queued on the GPU) has not " \
           "completed within 2 s: every rank arrived (NCCL seems stuck); aborting the job" \
           in done.stderr, done.stderr
    assert time.monotonic() - start < 40
