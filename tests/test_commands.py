"""The commands a user runs: their --help, and the console scripts of an installed dist_nn run
from a directory outside the repository (pyproject.toml, setup.py)."""
import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# command -> (module whose main(argv) it runs, what its --help must mention)
HELP = {
    "python -m datasets": ("datasets.__main__", ["exit status", "data.path="]),
    "python -m launch.mpirun": ("launch.mpirun", ["exit status", "-n 4", "OMP_NUM_THREADS"]),
    "python -m launch.search": ("launch.search", ["exit status", "launch/space.toml",
                                                  "docs/configuration.md"]),
    "python -m dist_nn.evaluate": ("dist_nn.evaluate", ["exit status", "-n N"]),
    "python -m dist_nn.plot": ("dist_nn.plot", ["exit status", "RUN_DIR"]),
    "python -m dist_nn.config": ("dist_nn.config.__main__", ["exit status", "--reference",
                                                           "overrides", "--resume"]),
}


@pytest.mark.parametrize("command", HELP)
def test_help_explains_the_arguments(command, capsys):
    module, mentions = HELP[command]
    with pytest.raises(SystemExit) as done:
        importlib.import_module(module).main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert text.startswith(f"usage: {command}")
    for mention in mentions:
        assert mention in text, f"{command} --help does not mention {mention!r}"


def test_config_command_exits_2_with_one_message(capsys):
    from dist_nn.config.__main__ import main
    assert main(["optim.lr=fast"]) == 2
    assert capsys.readouterr().err == "error: optim.lr must be a number, got 'fast'\n"
    assert main(["--config", str(ROOT / "launch" / "space.toml")]) == 2  # not a config


SOURCE_IGNORED = shutil.ignore_patterns(".git", "build", "*.egg-info", "runs", "__pycache__",
                                        ".pytest_cache", ".venv")


def builds_wheels_offline():
    """Whether this environment's setuptools builds a wheel by itself (>= 70.1 has
    bdist_wheel; older ones need the `wheel` package): then pip needs no build isolation,
    which would fetch setuptools from the index."""
    try:
        setuptools = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(part) for part in setuptools.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module", params=["editable", "wheel"])
def installed(request, tmp_path_factory):
    """A throwaway virtual environment that sees this environment's packages (the suite may
    run in a user's venv: a venv's system_site_packages would show the base Python's instead)
    holding dist_nn installed from a copy of this checkout: `pip install -e .` or
    `pip install .`."""
    base = tmp_path_factory.mktemp(request.param)
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=SOURCE_IGNORED)
    venv.create(base / "venv", with_pip=False)
    python = base / "venv" / "bin" / "python"
    own = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    outer = [path for path in sys.path if path.endswith(("site-packages", "dist-packages"))]
    Path(own, "outer_environment.pth").write_text("\n".join(outer) + "\n")
    isolation = ["--no-build-isolation"] if builds_wheels_offline() else []
    editable = ["-e"] if request.param == "editable" else []
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", *isolation, *editable,
                    str(source)], check=True, timeout=600, cwd=base)
    return base / "venv" / "bin", source, request.param


@pytest.mark.slow
def test_readme_commands_work_from_another_directory(installed, tmp_path):
    bin_dir, source, kind = installed
    # the scripts, then this Python's directory (where the mpich wheel puts mpiexec)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                            os.environ.get("PATH", "")])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PATH": path}

    def run(*argv):
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    # installed inside dist_nn, never as top-level packages that shadow others (HF datasets)
    where = run(bin_dir / "python", "-c", "import importlib.util as u, dist_nn.datasets.npz, "
                "dist_nn.launch.search; print([getattr(u.find_spec(n), 'origin', None) "
                "for n in ('datasets', 'launch')])")
    assert str(source) not in where and str(ROOT) not in where
    assert run("dist-nn-convert", "synthetic", "--samples", "300", "--shape", "1", "8", "8",
               "--classes", "4", "--out", "data.h5").split() == ["data.h5"]
    common = ["data.path=data.h5", "model.channels=[8]", "model.fc=16", "log.plots=false"]
    run("dist-nn-train", *common, "train.epochs=2", "log.run_dir=run")
    assert "accuracy" in run("dist-nn-evaluate", "run/checkpoints/best.h5", "--data", "data.h5")
    if kind == "editable":  # the same scripts; their imports were checked above
        return
    run("dist-nn-mpirun", "-n", "2", "dist-nn-train", *common, "train.max_steps=3",
        "log.run_dir=run2")
    assert (tmp_path / "run2" / "checkpoints" / "step-000000003.h5").is_file()
    run("dist-nn-search", "--space", source / "launch" / "space.toml", "--out", "search",
        "--trials", "1", "--rounds", "1", "--metric", "train_loss",
        "--param", "train.max_steps=2", "--param", "data.path=data.h5")
    assert (tmp_path / "search" / "results.csv").read_text().count("\n") == 2
