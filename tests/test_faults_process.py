"""Process faults under a real mpiexec: a rank that leaves mid-run, stop signals to the
launcher and during start-up, Ctrl-C. (Disk and checkpoint faults: tests/test_faults.py.)"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dist_nn import checkpoint
from launch import mpirun
from tests.test_faults import BASE, ROOT, finish, final_state, wait_for_step

PROGRAM = ROOT / "tests" / "distributed" / "programs" / "train_process_faults.py"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(mpirun.mpiexec_path() is None, reason="no mpiexec")]
RUN = BASE + ["checkpoint.every_steps=5", "checkpoint.keep=100"]  # all kept: none pruned


def start(run_dir, *arguments, fault=(), launcher=False, ranks=2):
    """The training job in the background: under plain mpiexec, or the launcher."""
    argv = ([sys.executable, str(PROGRAM), *map(str, fault)] if fault else
            [sys.executable, "-m", "dist_nn.train"]) + [*arguments, f"log.run_dir={run_dir}"]
    argv = ([sys.executable, "-m", "launch.mpirun", "-n", str(ranks), *argv] if launcher else
            mpirun.command(ranks, argv))
    return subprocess.Popen(argv, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env=mpirun.rank_environment(ranks, {"PYTHONPATH": str(ROOT)}))


def steps_saved(run_dir):
    """The steps of the valid checkpoints in run_dir, newest first."""
    return [step for step, path in checkpoint.step_checkpoints(Path(run_dir) / "checkpoints")
            if checkpoint.read(path)[2]["trainer"]["position"]["step"] == step]


def processes_of(run_dir):
    """The pids of processes whose command line names run_dir (mpiexec, proxies, ranks)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if str(run_dir).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@pytest.mark.parametrize("how", ["sys_exit", "os_exit"])
def test_a_rank_that_leaves_mid_run_ends_the_job(tmp_path, how):
    """Status 0 from one rank at step 12 of 400: the job ends non-zero within 30 s, naming
    it (MPICH reported success for os._exit; sys.exit hung until the watchdog), and the
    checkpoints of steps 5 and 10 are intact."""
    marker = tmp_path / "left"
    code, out, err = finish(start(tmp_path / "run", *RUN, "train.max_steps=400",
                                  fault=["leave", how, 12, marker]))
    ended = time.time()
    assert code not in (0, 75) and "[rank 1/2] left before the run finished" in err, err
    assert ended - float(marker.read_text()) < 30
    assert steps_saved(tmp_path / "run") == [10, 5]


def test_sigterm_to_the_launcher_checkpoints_and_leaves_no_process(tmp_path):
    job = start(tmp_path / "run", *RUN, "train.max_steps=100000", launcher=True)
    wait_for_step(tmp_path / "run", 10, job)
    job.send_signal(signal.SIGTERM)
    code, out, err = finish(job, timeout=15)
    assert code == 75, err
    assert "launcher: SIGTERM: sent SIGUSR1 to every rank" in err
    assert "preempted" in out and not processes_of(tmp_path / "run")
    saved = steps_saved(tmp_path / "run")
    assert saved[0] >= 10 and 5 in saved  # the earlier checkpoints are intact
    code, out, err = finish(start(tmp_path / "run", *RUN, f"train.max_steps={saved[0] + 5}",
                                  "--resume", "auto"))
    assert code == 0 and f"step {saved[0]}" in out, err


@pytest.mark.parametrize("phase", ["imports", "mpi", "data"])
@pytest.mark.parametrize("sig", ["SIGUSR1", "SIGTERM"])
def test_a_preemption_signal_during_start_up_is_kept(tmp_path, phase, sig):
    """Rank 1 alone gets the signal while importing NumPy, inside MPI's start-up or opening
    the data: no crash, and the run stops before its first step with 75, nothing lost."""
    code, out, err = finish(start(tmp_path / "run", *RUN, "train.max_steps=400",
                                  fault=["signal", sig, phase]))
    assert code == 75, f"{code}\n{out}\n{err}"
    assert ("preempted (signal on another rank): no step trained since the start (step 0): "
            "nothing to lose; exiting with 75 for the job script to requeue") in out
    assert steps_saved(tmp_path / "run") == []


def test_ctrl_c_checkpoints_and_exits_130_without_a_traceback(tmp_path):
    """Ctrl-C in a terminal reaches the launcher (the job runs in its own session), which
    passes it on once; MPICH's mpiexec passes it to every rank."""
    job = start(tmp_path / "run", *RUN, "train.max_steps=100000", launcher=True)
    wait_for_step(tmp_path / "run", 6, job)
    job.send_signal(signal.SIGINT)
    code, out, err = finish(job, timeout=30)
    assert code == 130, err
    assert "interrupted (SIGINT): the checkpoint of step" in out
    assert "Traceback" not in err and steps_saved(tmp_path / "run")[0] >= 6


def test_ctrl_c_on_one_process(tmp_path):
    job = subprocess.Popen([sys.executable, "-m", "dist_nn.train", *RUN,
                            "train.max_steps=100000", f"log.run_dir={tmp_path / 'run'}"],
                           cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wait_for_step(tmp_path / "run", 6, job)
    job.send_signal(signal.SIGINT)
    code, out, err = finish(job, timeout=30)
    assert code == 130 and "Traceback" not in err, err
    assert final_state(tmp_path / "run")[2]["trainer"]["position"]["step"] >= 6
