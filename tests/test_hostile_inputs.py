"""The promise for hostile input, as a table: a file or value made to harm (a decompression
bomb, data kept outside its file, a FIFO, a checkpoint that names code or reads another
file, a model too large for the machine) gets one message and exit 2 on every rank of a
2-rank job, runs nothing it names, and stays within bounded memory."""
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from dist_nn import checkpoint, config, models
from launch import mpirun
from tests.data.conftest import write_raw
from tests.test_faults_files import ADDRESS_SPACE_MIB, PEAK

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(mpirun.mpiexec_path() is None, reason="no mpiexec")]
PEAK_MIB = 600  # of any one process: what a small run takes, far below what the input claims


def samples():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (64, 1, 8, 8), dtype=np.uint8), rng.integers(0, 10, 64)


def bomb(tmp):
    path = write_raw(tmp / "bomb.h5", *samples())
    with h5py.File(path, "a") as f:
        del f["train/x"]
        f.create_dataset("train/x", (64, 1024, 1024, 1024), np.uint8,
                         chunks=(1, 1024, 1024, 1024), compression="gzip")
    return [f"data.path={path}"], "has chunks of (1, 1024, 1024, 1024), 1024 MiB each"


def outside(tmp):
    x, y = samples()
    (tmp / "raw.bin").write_bytes(x.tobytes())
    path = write_raw(tmp / "outside.h5", x, y)
    with h5py.File(path, "a") as f:
        del f["train/x"]
        f.create_dataset("train/x", x.shape, x.dtype, external=[("raw.bin", 0, x.nbytes)])
    return [f"data.path={path}"], "keeps its data in external files"


def fifo(tmp):
    os.mkfifo(tmp / "pipe.h5")
    return [f"data.path={tmp / 'pipe.h5'}"], "is not a regular file (a directory, FIFO or device)"


def code_naming_checkpoint(tmp):
    (tmp / "hostile.py").write_text("open('imported', 'w').write('ran')\n"
                                    "from dist_nn.models import mlp as builder\n")
    recorded = config.load(None, ["model.name=hostile:builder", "model.options.hidden=[8]",
                                  "log.run_dir=elsewhere"])
    weights = models.build("mlp", (1, 8, 8), 10, hidden=(8,)).state_dict()
    trainer = {"position": {"epoch": 0, "step": 0, "samples": 0}}
    path = checkpoint.write(tmp / "c.h5", weights, None,
                            {"config": config.to_toml(recorded), "trainer": trainer,
                             "world_size": 1, "model_given": False})
    return ["--resume", path], "records the model 'hostile:builder', which is not built in"


def linking_checkpoint(tmp):
    weights = models.build("mlp", (1, 8, 8), 10, hidden=(8,)).state_dict()
    path = checkpoint.write(tmp / "l.h5", weights)
    with h5py.File(path, "a") as f:
        f["model"]["stolen"] = h5py.ExternalLink("/etc/hostname", "x")
    return ["--resume", path], "/model/stolen is a link"


def too_large(tmp):
    return ["model.name=cnn", "model.channels=[1000000]"], "more than the"


def too_large_for_ulimit(tmp):
    """Fits the machine (1 GiB with its gradient and moments), not the 1 GiB `ulimit -v` left
    to each process, of which the libraries take a part."""
    return ["model.name=mlp", "model.options.hidden=[8192,8192]"], "more than the"


CASES = {"a gzip bomb": bomb, "data outside its file": outside, "a FIFO": fifo,
         "a checkpoint naming code": code_naming_checkpoint,
         "a checkpoint linking elsewhere": linking_checkpoint, "a model too large": too_large,
         "a model too large for ulimit -v": too_large_for_ulimit}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_one_message_exit_2_nothing_run_bounded_memory(tmp_path, case):
    arguments, message = CASES[case](tmp_path)
    argv = [sys.executable, "-m", "dist_nn.train", "log.plots=false", "log.tensorboard=off",
            *map(str, arguments), f"log.run_dir={tmp_path / 'run'}"]
    done = subprocess.run([sys.executable, "-c", PEAK, str(ADDRESS_SPACE_MIB),
                           *mpirun.command(2, argv)], cwd=tmp_path,
                          env=mpirun.rank_environment(2, {"PYTHONPATH": str(ROOT)}),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "imported").exists()
    assert int(done.stderr.split("peak ")[1].split()[0]) < PEAK_MIB * 1024, done.stderr


def memory_cgroup(tmp, limit_bytes):
    """A new memory cgroup (v1, or v2 with the memory controller delegated) under this
    process's own, limited to `limit_bytes`; skips where this machine lets us make none."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            parent, limit_file = Path("/sys/fs/cgroup/memory" + path), "memory.limit_in_bytes"
        elif controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            parent, limit_file = Path("/sys/fs/cgroup" + path), "memory.max"
        else:
            continue
        folder = parent / f"dist_nn-test-{os.getpid()}-{tmp.name}"
        try:
            folder.mkdir()
            (folder / limit_file).write_text(str(limit_bytes))
            return folder
        except OSError:
            if folder.exists():
                folder.rmdir()
    pytest.skip("cannot make a memory cgroup here (needs root and cgroup v1, or v2 delegated)")


def test_a_model_beyond_its_cgroups_limit_is_one_message_not_an_oom_kill(tmp_path):
    """As in a SLURM job limited by cgroup (`--mem`): the host has the memory, the job's
    cgroup does not. The weights are refused before they are drawn, on every rank; the
    kernel's OOM killer (exit 137, no message) is never reached."""
    cgroup = memory_cgroup(tmp_path, 1 << 30)
    argv = [sys.executable, "-m", "dist_nn.train", "log.plots=false", "log.tensorboard=off",
            "model.name=mlp", "model.options.hidden=[8192,8192]",
            f"log.run_dir={tmp_path / 'run'}"]
    try:
        done = subprocess.run(
            ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh",
             *mpirun.command(2, argv)], cwd=tmp_path,
            env=mpirun.rank_environment(2, {"PYTHONPATH": str(ROOT)}),
            capture_output=True, text=True, timeout=120)
    finally:
        cgroup.rmdir()
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "more than the" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
