"""Running test programs under a real `mpiexec` (see launch/mpirun.py)."""
import json
import os
import sys
from pathlib import Path

import pytest

from launch import mpirun

PROGRAMS = Path(__file__).parent / "programs"
ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "gpu_standin"


def pythonpath():
    """ROOT, after the CuPy stand-in when the suite runs on it (tests/conftest.py)."""
    on_standin = os.environ.get("DIST_NN_CUPY_STANDIN") == "1"
    return os.pathsep.join([str(STANDIN)] * on_standin + [str(ROOT)])

needs_mpi = pytest.mark.skipif(mpirun.mpiexec_path() is None,
                               reason="no mpiexec (pip install mpich)")


def launch(ranks, program, *args, timeout=240, env=None):
    """Run tests/distributed/programs/<program>.py on `ranks` ranks (`env`: variables added);
    the CompletedProcess."""
    argv = [sys.executable, str(PROGRAMS / f"{program}.py"), *map(str, args)]
    return mpirun.run(ranks, argv, env={"PYTHONPATH": pythonpath(), **(env or {})},
                      capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def run_json(ranks, program, tmp_path, *args, timeout=240, env=None):
    """Launch a program that writes its results as JSON to the path given as its first
    argument; fail with its output if it does not exit cleanly."""
    out = tmp_path / f"{program}-{ranks}-{abs(hash(args))}.json"
    done = launch(ranks, program, out, *args, timeout=timeout, env=env)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(out.read_text())
