"""bench/network.py --smoke end to end: two ranks in two network namespaces over a tbf-limited
link, dist_nn (Open MPI over TCP) and PyTorch DDP (gloo). Needs root, `ip` and `tc`, PyTorch,
and DIST_NN_OPENMPI_PYTHON naming a Python whose mpi4py is Open MPI's."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPENMPI_PYTHON = os.environ.get("DIST_NN_OPENMPI_PYTHON", "")


def missing():
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc)"
    if not (shutil.which("ip") and shutil.which("tc")):
        return "needs `ip` and `tc` (iproute2)"
    if not OPENMPI_PYTHON or not Path(OPENMPI_PYTHON).exists():
        return "DIST_NN_OPENMPI_PYTHON does not name a Python with Open MPI's mpi4py"
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=str(missing()))]


def test_smoke_trains_both_libraries_over_the_link_and_cleans_up():
    done = subprocess.Popen([sys.executable, "bench/network.py", "--smoke", "--python",
                             OPENMPI_PYTHON], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = done.communicate(timeout=300)[0]
    assert done.returncode == 0, out
    assert "Link: veth pair (full duplex)" in out or "Link: loopback (half duplex)" in out, out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| Gbit/s | model |"))
    names = [cell.strip() for cell in lines[header].strip("|").split("|")]
    cells = [cell.strip() for cell in lines[header + 2].strip("|").split("|")]
    row = dict(zip(names, cells))
    assert (row["model"], row["compression"]) == ("mlp", "none"), out
    assert float(row["dist_nn / DDP, 2 ranks"]) > 0, out
    # the gradients crossed the link (7.1 MiB a step), not shared memory: the interface's
    # counter saw them, for dist_nn (the first MB/step) and for DDP (the second)
    sent = [float(cell) for name, cell in zip(names, cells) if name == "MB/step"]
    assert len(sent) == 2 and all(6 < mb < 12 for mb in sent), out
    assert float(row["model ms"]) > 0 and row["model error"].endswith("%"), out
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"dnb{done.pid}" not in namespaces  # deleted on exit
