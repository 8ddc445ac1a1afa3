"""Every test starts on the CPU in float32 with the backend's random streams seeded, whatever
ran before it and whatever DIST_NN_DEVICE says; tests that need float64 (or a GPU) switch with
`backend.using(...)` inside the test."""
import os
import sys
from pathlib import Path

import pytest

# DIST_NN_CUPY_STANDIN=1: `import cupy` gives the CuPy stand-in (tests/gpu_standin), here and
# in subprocesses (those that set PYTHONPATH themselves add it too: tests/distributed/mpi.py),
# so that the GPU path runs without a GPU.
if os.environ.get("DIST_NN_CUPY_STANDIN") == "1":
    STANDIN = str(Path(__file__).resolve().parent / "gpu_standin")
    sys.path.insert(0, STANDIN)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [STANDIN, *filter(None, [os.environ.get("PYTHONPATH")])])

from dist_nn import backend  # noqa: E402  (after the stand-in's path)

backend.use("cpu", "float32")


@pytest.fixture(autouse=True)
def deterministic_cpu_backend():
    backend.use("cpu", "float32")
    backend.seed(0)
    yield
    backend.use("cpu", "float32")


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """mount(size) -> a directory on a fresh tmpfs of `size` bytes (a real full disk to
    fill), unmounted after the test; skipped unless the tests run as root."""
    import os
    import subprocess
    mounted = []

    def mount(size):
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
        mounted.append(where)
        return where
    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
