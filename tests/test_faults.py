"""Fault injection under a real mpiexec: preemption signals, a killed rank, a kill during a
checkpoint write, damaged checkpoints, a full disk."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dist_nn import checkpoint
from dist_nn.monitor import read_records
from launch import mpirun
from tests.test_checkpoint import corrupt

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "tests" / "distributed" / "programs" / "train_with_faults.py"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(mpirun.mpiexec_path() is None, reason="no mpiexec")]
BASE = ["model.name=mlp", "model.hidden=[32]", "log.plots=false", "log.tensorboard=off",
        "train.dtype=float64", "model.dropout=0.2", "augment.enabled=true", "augment.flip=0",
        "augment.crop=1", "augment.noise=0.05", "log.every_steps=2"]


def start(run_dir, *arguments, fault=None, ranks=2):
    """The training job, running in the background."""
    argv = ([sys.executable, str(PROGRAM), *fault] if fault else
            [sys.executable, "-m", "dist_nn.train"]) + [*arguments, f"log.run_dir={run_dir}"]
    return subprocess.Popen(mpirun.command(ranks, argv), cwd=ROOT, text=True,
                            env=mpirun.rank_environment(ranks, {"PYTHONPATH": str(ROOT)}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(job, timeout=120):
    out, err = job.communicate(timeout=timeout)
    return job.returncode, out, err


def wait_for_step(run_dir, step, job, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, job.communicate()
        path = Path(run_dir) / "metrics.jsonl"
        if path.exists() and any(r["step"] >= step for r in read_records(run_dir)):
            return
        time.sleep(0.1)
    raise TimeoutError(f"no step {step} in {run_dir}")


def rank_pid(run_dir, rank):
    """The pid of a rank of the job training into run_dir (from /proc; the rank variable of
    MPICH's launcher or Open MPI's)."""
    marks = {f"{variable}={rank}".encode() for variable in ("PMI_RANK", "OMPI_COMM_WORLD_RANK")}
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if argv[0] == sys.executable.encode() and any(str(run_dir).encode() in a for a in argv) \
                and marks & set(environ):
            return int(entry.name)
    raise LookupError(f"no rank {rank} training into {run_dir}")


def final_state(run_dir):
    return checkpoint.read(checkpoint.step_checkpoints(Path(run_dir) / "checkpoints")[0][1])


def test_a_signal_to_one_rank_checkpoints_and_resumes_exactly(tmp_path):
    """SIGUSR1 to rank 1 alone: both ranks stop after the same step, rank 0 checkpoints,
    exit 75; the resumed run ends with the parameters of an uninterrupted one."""
    run = BASE + ["train.max_steps=400"]
    code, out, err = finish(start(tmp_path / "straight", *run))
    assert code == 0, err
    job = start(tmp_path / "preempted", *run)
    wait_for_step(tmp_path / "preempted", 10, job)
    os.kill(rank_pid(tmp_path / "preempted", 1), signal.SIGUSR1)
    code, out, err = finish(job)
    assert code == 75, err
    assert "preempted (signal on another rank): the checkpoint of step" in out
    stopped_at = final_state(tmp_path / "preempted")[2]["trainer"]["position"]["step"]
    assert 10 <= stopped_at < 400
    code, out, err = finish(start(tmp_path / "preempted", *run, "--resume", "auto"))
    assert code == 0, err
    assert f"step {stopped_at}" in out
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "preempted")
    assert a[2]["trainer"]["position"]["step"] == b[2]["trainer"]["position"]["step"] == 400
    for key in a[0]:
        np.testing.assert_array_equal(a[0][key], b[0][key], err_msg=key)


def test_a_start_up_stuck_on_every_rank_is_named_and_ended(tmp_path):
    """Every rank stuck opening the data (no rank in a collective for the watchdog to time):
    the start-up deadline names the rank and what it was doing, and ends the job."""
    began = time.monotonic()
    code, out, err = finish(start(tmp_path / "run", *BASE, "train.watchdog_s=3",
                                  fault=["stuck-open"]), timeout=60)
    assert code not in (0, 2, 75), err
    assert time.monotonic() - began < 40
    assert re.search(r"\[rank [01]/2\] start-up: still opening the data \(digits\) after 3 s "
                     r"\(train.watchdog_s\): a file system that does not answer\?; aborting "
                     r"the job", err), err


def test_a_stop_signal_ends_a_start_up_stuck_outside_any_collective(tmp_path):
    """SIGUSR1 to a rank whose start-up is stuck opening the data (where a signal only sets
    a flag): the job ends with 75 soon after, nothing having been trained."""
    job = start(tmp_path / "run", *BASE, "train.watchdog_s=120", fault=["stuck-open"])
    deadline = time.monotonic() + 30
    while not (tmp_path / "run" / "run.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)  # both ranks inside the open that never returns
    os.kill(rank_pid(tmp_path / "run", 1), signal.SIGUSR1)
    began = time.monotonic()
    code, out, err = finish(job, timeout=60)
    assert code == 75, f"exit {code}\n{out}\n{err}"
    assert time.monotonic() - began < 30
    assert re.search(r"\[rank 1/2\] preempted \(SIGUSR1\) during start-up, still opening the "
                     r"data \(digits\): no step trained, nothing to lose; exiting with 75", err)


def test_kill_9_of_one_rank_ends_the_job(tmp_path):
    job = start(tmp_path / "run", *BASE, "train.epochs=200")
    wait_for_step(tmp_path / "run", 6, job)
    os.kill(rank_pid(tmp_path / "run", 1), signal.SIGKILL)
    start_time = time.monotonic()
    code, _, err = finish(job, timeout=60)
    assert code != 0 and time.monotonic() - start_time < 60


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    run = BASE + ["checkpoint.every_steps=5", "train.max_steps=20"]
    marker = tmp_path / "writing"
    job = start(tmp_path / "run", *run, fault=["slow-checkpoint", marker])
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and job.poll() is None, job.communicate()
        time.sleep(0.1)
    os.kill(int(marker.read_text()), signal.SIGKILL)  # rank 0, inside the second write
    code, _, _ = finish(job, timeout=60)
    assert code != 0
    checkpoints = tmp_path / "run" / "checkpoints"
    assert list(checkpoints.glob("*.partial"))  # the torn write, never renamed
    path, (_, _, meta) = checkpoint.newest_valid(checkpoints)
    assert path.name == "step-000000005.h5" and meta["trainer"]["position"]["step"] == 5
    code, out, err = finish(start(tmp_path / "run", *run, "--resume", "auto"))
    assert code == 0 and "at epoch 0, step 5" in out, err
    assert final_state(tmp_path / "run")[2]["trainer"]["position"]["step"] == 20


def truncate(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 3])


@pytest.mark.parametrize("damage, reason", [
    (truncate, "truncated or damaged"),
    (corrupt, "corrupted: its checksum does not match"),  # flipped bytes in a weight
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_older(tmp_path, damage, reason):
    run = BASE + ["checkpoint.every_steps=5"]
    code, _, err = finish(start(tmp_path / "run", *run, "train.max_steps=15"))
    assert code == 0, err
    newest = tmp_path / "run" / "checkpoints" / "step-000000015.h5"
    damage(newest)
    code, out, err = finish(start(tmp_path / "run", *run, "train.max_steps=20", "--resume",
                                  "auto"))
    assert code == 0, err
    assert f"warning: skipping {newest}: " in out and reason in out
    assert "at epoch 0, step 10" in out


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_why(tmp_path):
    run = BASE + ["checkpoint.every_steps=5", "train.max_steps=15"]
    code, out, err = finish(start(tmp_path / "run", *run, fault=["disk-full"]))
    assert code == 0, err
    saved = tmp_path / "run" / "checkpoints"
    assert (f"warning: cannot write the checkpoint {saved / 'step-000000010.h5'}: No space "
            f"left on device; the newest checkpoint on disk is {saved / 'step-000000005.h5'}"
            ) in out
    steps = [s for s, _ in checkpoint.step_checkpoints(tmp_path / "run" / "checkpoints")]
    assert steps == [15, 5]


def launched(run_dir, *arguments):
    """The training job through the launcher (python -m launch.mpirun -n 2)."""
    argv = [sys.executable, "-m", "launch.mpirun", "-n", "2", sys.executable, "-m",
            "dist_nn.train", *arguments, f"log.run_dir={run_dir}"]
    return subprocess.Popen(argv, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_ctrl_c_is_told_apart_from_a_preemption_under_either_mpi(tmp_path):
    """Through the launcher Ctrl-C is 130 under MPICH and Open MPI (whose mpiexec cannot pass
    SIGINT on: the launcher sends SIGUSR2); straight to MPICH's mpiexec too. (Open MPI's own
    mpiexec turns it into SIGTERM, a preemption to the ranks, and kills them soon after,
    checkpoint or not: tests/test_signals.py checks what a rank says of such a SIGTERM.)"""
    open_mpi = mpirun.is_open_mpi(mpirun.mpiexec_path())
    job = launched(tmp_path / "launched", *BASE, "train.epochs=10000")
    wait_for_step(tmp_path / "launched", 4, job)
    job.send_signal(signal.SIGINT)
    code, out, err = finish(job)
    assert code == 130, f"exit {code}\n{out}\n{err}"
    received = "Ctrl-C, passed on by the launcher as SIGUSR2" if open_mpi else "SIGINT"
    assert f"interrupted ({received}): the checkpoint of step " in out, out
    if open_mpi:  # its own mpiexec: SIGTERM, as a preemption (test_signals.py: said so)
        return
    job = start(tmp_path / "direct", *BASE, "train.epochs=10000")
    wait_for_step(tmp_path / "direct", 4, job)
    job.send_signal(signal.SIGINT)
    code, out, err = finish(job)
    assert code == 130 and "interrupted (SIGINT): the checkpoint of step " in out, err
