"""Fault injection through the CLI under a real mpiexec (2 ranks): two runs in one directory,
a full file system, bytes changed in a data file during a run, files that lie (a huge
declared shape, a forged or unsigned checkpoint, a hostile pickle) and bad config values.
Each ends in one message and its exit code, and what was saved before survives."""
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from dist_nn import checkpoint
from dist_nn.data import DatasetWriter
from launch import mpirun
from tests.data.test_checks import flip_a_byte_in_chunk, huge
from tests.test_faults import finish, rank_pid, wait_for_step

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(mpirun.mpiexec_path() is None, reason="no mpiexec")]
SMALL = ["model.name=mlp", "model.hidden=[32]", "log.plots=false", "log.tensorboard=off",
         "log.every_steps=1"]


def start(run_dir, *arguments, ranks=2):
    argv = [sys.executable, "-m", "dist_nn.train", *map(str, arguments)]
    if run_dir is not None:
        argv.append(f"log.run_dir={run_dir}")
    return subprocess.Popen(mpirun.command(ranks, argv), cwd=ROOT, text=True,
                            env=mpirun.rank_environment(ranks, {"PYTHONPATH": str(ROOT)}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(run_dir, *arguments, ranks=2, timeout=180):
    return finish(start(run_dir, *arguments, ranks=ranks), timeout)


def steps_on_disk(run_dir):
    return [s for s, _ in checkpoint.step_checkpoints(Path(run_dir) / "checkpoints")]


def said_once(text, message):
    assert text.count(message) == 1, text
    assert "Traceback" not in text, text


def test_a_run_directory_belongs_to_one_run(tmp_path):
    """A second live run is refused while the first holds the directory; the lock dies with
    its holder (kill -9); a fresh run never takes another run's checkpoints unless resumed or
    told to overwrite; a resume with other values says which, and they take effect."""
    path = tmp_path / "run"
    first = start(path, *SMALL, "train.epochs=500", "checkpoint.every_steps=5")
    wait_for_step(path, 6, first)
    code, out, err = run(path, *SMALL, "--resume", "auto")
    assert code == 2, err
    said_once(err, f"error: the run directory {path} is in use by a live run (pid "
                   f"{rank_pid(path, 0)} on ")
    assert first.poll() is None  # the first run trains on
    os.kill(rank_pid(path, 0), signal.SIGKILL)
    finish(first, 60)
    saved = steps_on_disk(path)
    assert saved and saved[0] >= 5

    code, out, err = run(path, *SMALL, "train.max_steps=5")
    assert code == 2
    said_once(err, f"the run directory {path} holds another run's checkpoints (step-")
    assert steps_on_disk(path) == saved

    code, out, err = run(path, f"train.max_steps={saved[0] + 3}", "optim.lr=0.01", "--resume",
                         "auto")  # the rest comes from the run's own config
    assert code == 0, err
    said_once(out, "resuming with values that differ from the checkpoint's config; they take "
                   f"effect: optim.lr: 0.05 -> 0.01; train.max_steps: 0 -> {saved[0] + 3}")
    meta = checkpoint.read(checkpoint.step_checkpoints(path / "checkpoints")[0][1])[2]
    assert meta["trainer"]["position"]["step"] == saved[0] + 3 and "lr = 0.01" in meta["config"]

    code, out, err = run(path, *SMALL, "train.max_steps=2", "log.overwrite=true")
    assert code == 0, err
    said_once(out, "log.overwrite: deleted the previous run's checkpoints (")
    assert steps_on_disk(path) == [2]


@contextlib.contextmanager
def full(disk):
    """A file system kept full to its last page while the block runs: what a run frees (a
    rolled-back metrics line, a temporary file) is taken again at once, as on a disk other
    writers fill. Yields the filler file."""
    filler, stop = disk / "filler", threading.Event()
    file = open(filler, "wb", buffering=0)

    def take_what_is_free():
        while True:
            try:
                file.write(b"\0" * 4096)
            except OSError:
                if stop.wait(0.005):
                    return
    taken = threading.Thread(target=take_what_is_free, daemon=True)
    try:
        while True:  # full before the block starts
            file.write(b"\0" * 4096)
    except OSError:
        pass
    taken.start()
    try:
        yield filler
    finally:
        stop.set()
        taken.join()
        file.close()


END = 400  # within the 20 epochs of 22 steps


def test_a_full_file_system_is_survived_and_a_lost_final_checkpoint_exits_4(tiny_tmpfs):
    """The disk fills up mid-run: every write that fails is said once (checkpoints each
    time), training goes on to the end, and without its final checkpoint the run exits 4;
    once there is space again it resumes from the last checkpoint that was written."""
    for package in ("tensorboard", "matplotlib"):  # their files fill the disk too
        pytest.importorskip(package, reason=f"the dev extra's {package} is not installed")
    disk = tiny_tmpfs("4m")
    path = disk / "run"
    # max_steps: far beyond step 12, where the ranks are stopped (a step takes ~2 ms)
    run_args = [*SMALL, "checkpoint.every_steps=5", f"train.max_steps={END}", "log.plots=true",
                "log.tensorboard=on"]
    job = start(path, *run_args, "train.watchdog_s=60")
    wait_for_step(path, 12, job)
    ranks = [rank_pid(path, rank) for rank in range(2)]
    for pid in ranks:  # held while the disk fills: a step takes less than the filling
        os.kill(pid, signal.SIGSTOP)
    with full(disk) as filler:
        for pid in ranks:
            os.kill(pid, signal.SIGCONT)
        code, out, err = finish(job, 180)
    assert code == 4, f"exit {code}\n{out}\n{err}"
    last = steps_on_disk(path)[0]
    assert 10 <= last < END
    said_once(err, f"error: the run finished, but the checkpoint of step {END} could not be "
                   f"written (cannot write the checkpoint {path}/checkpoints/step-{END:09d}.h5: "
                   f"No space left on device); the newest checkpoint on disk is "
                   f"{path}/checkpoints/step-{last:09d}.h5")
    said_once(out, f"warning: could not write {path / 'metrics.jsonl'} (No space left on "
                   "device)")
    # the CSV row may still fit in what the rolled-back JSONL line freed: at most once
    assert out.count(f"warning: could not write {path / 'metrics.csv'} (No space") <= 1, out
    assert "warning: no plots: cannot write" in out
    filler.unlink()
    code, out, err = run(path, *run_args, "--resume", "auto")
    assert code == 0, err
    assert f"resumed from {path}/checkpoints/step-{last:09d}.h5 at epoch" in out
    assert steps_on_disk(path)[0] == END


def test_a_preemption_that_cannot_checkpoint_exits_4_not_75(tiny_tmpfs):
    """Preempted on a full disk, with no checkpoint ever written: a requeue would start from
    scratch, so the run says so and exits 4, not 75."""
    disk = tiny_tmpfs("4m")
    path = disk / "run"
    with full(disk):
        job = start(path, *SMALL, "train.epochs=500", "train.watchdog_s=60")
        for line in job.stderr:  # the progress lines: steps are being trained
            if "step 30 " in line:
                break
        os.kill(rank_pid(path, 1), signal.SIGTERM)
        code, out, err = finish(job, 60)
    assert code == 4, f"exit {code}\n{out}\n{err}"
    assert steps_on_disk(path) == []
    said_once(err, "error: preempted (signal on another rank) at step ")
    assert f"could not be written (cannot write the checkpoint {path}/checkpoints/step-" in err
    assert ("No space left on device); no checkpoint of this run is on disk: a restart would "
            "lose steps; exiting with 4") in err


def test_an_old_checkpoint_that_cannot_be_deleted_is_a_warning(tmp_path):
    """Pruning that fails (an immutable file) costs nothing: the new checkpoints are written,
    the newest is named truly, and the run exits 0."""
    path = tmp_path / "run"
    code, out, err = run(path, *SMALL, "checkpoint.every_steps=5", "checkpoint.keep=1",
                         "train.max_steps=5")
    assert code == 0, err
    stuck = path / "checkpoints" / "step-000000005.h5"
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a file system that supports it")
    try:
        code, out, err = run(path, "train.max_steps=15", "--resume", "auto")
        assert code == 0, f"exit {code}\n{out}\n{err}"
        assert out.count(f"warning: could not delete the old checkpoint {stuck} (Operation "
                         "not permitted); it stays") == 2
        assert steps_on_disk(path) == [15, 5]
        assert f"done: 15 steps" in out
    finally:
        subprocess.run(["chattr", "-i", str(stuck)])


def big_data(path, n=4096):
    """A training split of 4096 samples of 3x32x32 in 64 chunks (12 MiB): more than h5py's
    chunk cache holds (8 MiB), so a run keeps reading the file."""
    rng = np.random.default_rng(0)
    with DatasetWriter(path, 4, (3, 32, 32), np.uint8, {"train": n}, "test",
                       chunk_samples=64) as writer:
        writer.append("train", rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                      rng.integers(0, 4, n))
    return path


def test_bytes_changed_in_a_data_file_during_a_run_stop_every_rank(tmp_path):
    data = big_data(tmp_path / "d.h5")
    path = tmp_path / "run"
    job = start(path, *SMALL, f"data.path={data}", "data.cache_mb=0", "train.epochs=50",
                "checkpoint.every_steps=5", "data.global_batch_size=64",
                "checkpoint.best_metric=train_loss", "train.early_stopping_metric=train_loss")
    wait_for_step(path, 6, job)
    with h5py.File(data, "r") as f:
        chunks = f["train/x"].id.get_num_chunks()
    for chunk in range(chunks):  # whichever a rank reads next fails its checksum
        flip_a_byte_in_chunk(data, "train/x", chunk)
    began = time.monotonic()
    code, out, err = finish(job, 120)
    assert code == 2, err
    assert time.monotonic() - began < 60
    assert f"{data}: cannot read /train/x: a chunk fails its checksum or is damaged" in err
    assert "Traceback" not in err
    assert steps_on_disk(path) and checkpoint.read(
        checkpoint.step_checkpoints(path / "checkpoints")[0][1])


# Runs a command under `ulimit -v` (each process's address space capped at argv[1] MiB, as a
# shared cluster node's limit would), then prints the largest RSS any of its processes reached.
PEAK = ("import resource, subprocess, sys\n"
        "cap = int(sys.argv[1]) << 20\n"
        "resource.setrlimit(resource.RLIMIT_AS, (cap, cap))\n"
        "code = subprocess.run(sys.argv[2:]).returncode\n"
        "print(f'peak {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} KiB', "
        "file=sys.stderr)\n"
        "sys.exit(code)\n")
ADDRESS_SPACE_MIB = 1024  # per process: a small run (libraries, MPI) fits; one bomb chunk does not


def test_a_huge_declared_shape_is_one_message_in_bounded_memory(tmp_path):
    data = huge(tmp_path / "h.h5")
    argv = [sys.executable, "-m", "dist_nn.train", *SMALL, f"data.path={data}",
            f"log.run_dir={tmp_path / 'run'}"]
    done = subprocess.run([sys.executable, "-c", PEAK, str(ADDRESS_SPACE_MIB),
                           *mpirun.command(2, argv)], cwd=ROOT,
                          env=mpirun.rank_environment(2, {"PYTHONPATH": str(ROOT)}),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 2
    said_once(done.stderr, f"{data}: /train/x declares (10000000, 3, 1024, 1024) but stores "
                           "only 0 of its 2560000000 chunks: truncated or forged")
    peak_kib = int(done.stderr.split("peak ")[1].split()[0])
    assert peak_kib < 400 * 1024  # of any one process of the job: the 30 TB are never touched


def test_forged_and_unsigned_checkpoints(tmp_path):
    path = tmp_path / "run"
    code, out, err = run(path, *SMALL, "train.max_steps=10", "checkpoint.every_steps=5")
    assert code == 0, err
    model, optimizer, meta = checkpoint.read(path / "checkpoints" / "step-000000010.h5")
    meta["trainer"]["position"]["epoch"] = 10**6
    forged = checkpoint.write(tmp_path / "forged.h5", model, optimizer, meta)
    code, out, err = run(path, *SMALL, "--resume", forged)
    assert code == 2
    said_once(err, f"cannot resume from {forged}: the saved run is at epoch 1000000, step 10, "
                   "beyond this run's end (train.epochs = 20")
    with h5py.File(path / "checkpoints" / "step-000000010.h5", "a") as f:
        del f.attrs["checksum"]
    code, out, err = run(path, *SMALL, "train.max_steps=12", "--resume", "auto")
    assert code == 0, err
    assert "has no checksum: it was not written by dist_nn, or was altered; falling back" in out
    assert "at epoch 0, step 5" in out


class RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_hostile_pickle_runs_no_code(tmp_path):
    source = tmp_path / "cifar-10-batches-py"
    source.mkdir()
    with open(source / "data_batch_1", "wb") as f:
        pickle.dump({b"data": RunsShell(tmp_path / "ran"), b"labels": [0]}, f)
    done = subprocess.run([sys.executable, "-m", "datasets", "cifar10", str(source), "--out",
                           str(tmp_path / "c.h5")], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 2 and not (tmp_path / "ran").exists()  # a data error
    said_once(done.stderr, "data_batch_1: not a CIFAR batch: it names posix.system, which no "
                           "CIFAR batch holds; refused without running it")


@pytest.mark.parametrize("case", ["range", "utf8", "file", "proc", "read-only", "world"])
def test_bad_config_values_are_one_message_and_exit_2(tmp_path, tiny_tmpfs, case):
    run_dir, arguments = tmp_path / "run", []
    if case == "range":
        arguments, message = ["augment.flip=2"], "augment.flip must be in [0, 1], got 2.0"
    elif case == "utf8":
        (tmp_path / "c.toml").write_bytes(b'[log]\nrun_dir = "caf\xe9"\n')
        arguments = ["--config", tmp_path / "c.toml"]
        message = f"config file {tmp_path / 'c.toml'} is not UTF-8 text (byte"
    elif case == "file":
        run_dir.write_text("")
        message = f"log.run_dir {run_dir} is a file, not a directory"
    elif case == "proc":
        run_dir, message = "/proc/self/run", "is on a system file system"
    elif case == "read-only":
        run_dir = tiny_tmpfs("64k")
        subprocess.run(["mount", "-o", "remount,ro", str(run_dir)], check=True)
        message = f"cannot write into the run directory {run_dir}: Read-only file system"
    else:
        arguments = ["data.global_batch_size=1"]
        message = "data.global_batch_size = 1 cannot give each of 2 ranks a sample"
    code, out, err = run(run_dir, *SMALL, *arguments)
    assert code == 2, err
    said_once(err, message)
