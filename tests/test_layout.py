"""The layout is visible to tools: no folder is named as build output (dist/, build/), so
ruff's default file discovery (black's and pytest's alike) sees every Python file of the
package, its tests, the launchers, the converters and the benchmarks."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("dist_nn", "tests", "launch", "datasets", "bench")


def python_files():
    return {path.resolve() for folder in FOLDERS for path in (ROOT / folder).rglob("*.py")
            if "__pycache__" not in path.parts}


def test_ruff_default_discovery_sees_every_python_file():
    try:
        import ruff  # noqa: F401  (the dev extra)
    except ImportError:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    listed = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated",
                             "--show-files", str(ROOT)], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert listed.returncode in (0, 1), listed.stderr  # 1: it found lint, which is not asked
    seen = {Path(line).resolve() for line in listed.stdout.splitlines() if line.endswith(".py")}
    missing = sorted(str(path.relative_to(ROOT)) for path in python_files() - seen)
    assert not missing, f"ruff's default discovery skips {missing}: rename the folder"
    assert len(python_files()) > 150  # the walk itself found the tree


def test_no_folder_is_named_as_build_output():
    """The names Python tooling (ruff, black, pytest, the standard .gitignore) skips."""
    skipped = {"dist", "build", "_build", "venv", ".venv", "node_modules", "buck-out"}
    folders = [path for folder in FOLDERS for path in (ROOT / folder).rglob("*")
               if path.is_dir() and path.name in skipped]
    assert not folders, folders

