"""data.cache_mb per node: the ranks of a node share one in-memory copy of a split (an MPI-3
shared window), it is gone when the job ends (also when a rank is killed), and where the
node cannot share memory (a container's 64 MB /dev/shm) each rank keeps its own, said once."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datasets import synthetic
from launch import mpirun
from tests.distributed import mpi

pytestmark = [pytest.mark.slow, mpi.needs_mpi]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """86 MB of uint8 samples: more than a 64 MB /dev/shm holds."""
    path = tmp_path_factory.mktemp("cache") / "d.h5"
    synthetic.convert(path, 28000, shape=(3, 32, 32), classes=10, dtype="uint8",
                      val_samples=0)
    return path


def report(path):
    return json.loads(Path(path).read_text())


def test_two_ranks_read_one_copy(tmp_path, data):
    done = mpi.launch(2, "shared_cache", tmp_path / "r.json", data)
    assert done.returncode == 0, done.stderr
    ranks = report(tmp_path / "r.json")
    for rank in ranks:  # a byte the last rank wrote is what rank 0 reads: one memory
        assert rank["cached"] and rank["shared"] and rank["equal"] and rank["seen"], rank
    # the window's segment is unlinked once mapped: nothing of it can outlive the job
    assert {f for f in ranks[0]["shm"] if f.endswith("(deleted)")} & set(ranks[1]["shm"])


def test_the_cache_is_gone_when_a_rank_is_killed(tmp_path, data):
    """Through dist_nn's launcher: a rank killed (SIGKILL) after loading; afterwards no file
    that any rank mapped in /dev/shm is left (the cache's was never visible; MPICH's own
    segments are removed by the launcher)."""
    argv = [sys.executable, str(mpi.PROGRAMS / "shared_cache.py"), str(tmp_path / "r.json"),
            str(data), "--kill"]
    done = subprocess.run([sys.executable, "-m", "launch.mpirun", "-n", "2", *argv], cwd=ROOT,
                          env=mpirun.rank_environment(2, {"PYTHONPATH": mpi.pythonpath()}),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    mapped = {f.split(" ")[0] for rank in report(tmp_path / "r.json") for f in rank["shm"]}
    assert mapped and not [f for f in mapped if os.path.exists(f)], mapped


needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="mounts a small /dev/shm: needs root and unshare")


def in_small_shm(command):
    """`command` in a mount namespace whose /dev/shm is a 64 MB tmpfs (Docker's default)."""
    return ["unshare", "-m", "sh", "-c",
            'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$@"', "sh", *command]


@needs_root
def test_a_node_that_cannot_share_keeps_a_copy_per_rank_and_says_so(tmp_path, data):
    done = subprocess.run(
        in_small_shm(mpirun.command(2, [sys.executable, str(mpi.PROGRAMS / "shared_cache.py"),
                                        str(tmp_path / "r.json"), str(data)])),
        cwd=ROOT, env=mpirun.rank_environment(2, {"PYTHONPATH": mpi.pythonpath()}),
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ranks = report(tmp_path / "r.json")
    assert all(r["cached"] and r["equal"] and not r["shared"] for r in ranks)
    assert not ranks[0]["seen"]  # rank 0's copy is its own
    train = subprocess.run(
        in_small_shm(mpirun.command(2, [sys.executable, "-m", "dist_nn.train",
                                        f"data.path={data}", "model.name=mlp",
                                        "model.hidden=[8]", "train.max_steps=2",
                                        "log.plots=false", "log.tensorboard=off",
                                        f"log.run_dir={tmp_path / 'run'}"])),
        cwd=ROOT, env=mpirun.rank_environment(2, {"PYTHONPATH": mpi.pythonpath()}),
        capture_output=True, text=True, timeout=180)
    assert train.returncode == 0, train.stderr
    assert train.stdout.count("notice: the ranks of this node cannot share memory") == 1
