"""The commands a user runs: their --help, and the console scripts of an installed dist_nn run
from a directory outside the repository (pyproject.toml, setup.py)."""
import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

from tests.test_faults_process import processes_of

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
    env = script_environment(bin_dir)

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


def script_environment(bin_dir):
    """The scripts, then this Python's directory (where the mpich wheel puts mpiexec); and
    the mpich wheel's library for mpi4py, which looks for it under its own environment's
    prefix (the throwaway one's has none) and would load a system MPI instead."""
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                            os.environ.get("PATH", "")])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PATH": path}
    wheel_library = Path(sys.exec_prefix, "lib", "libmpi.so.12")
    if wheel_library.exists() and "MPI4PY_LIBMPI" not in env:
        env["MPI4PY_LIBMPI"] = str(wheel_library)
    return env


SAID = ("before the job started: nothing to lose", "no step trained since the start (step 0): "
        "nothing to lose", "the checkpoint of step")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 75), (signal.SIGINT, 130)])
def test_a_stop_signal_at_any_moment_of_start_up_loses_nothing(installed, tmp_path, sig, code):
    """SIGTERM or Ctrl-C to `dist-nn-mpirun -n 2 dist-nn-train` from its first instant to its
    first steps: 75 or 130, with the checkpoint of the step reached or nothing to lose (said
    so), never a rank killed by a signal nor a traceback, and no process left."""
    bin_dir, _, kind = installed
    if kind == "editable":
        pytest.skip("the same scripts as the wheel's")
    env = script_environment(bin_dir)
    for delay in (0.1, 0.3, 0.6, 1.5, 3.0, 6.0):  # from ~60 ms: the handlers are in place
        run_dir = tmp_path / f"run-{delay}"
        job = subprocess.Popen(["dist-nn-mpirun", "-n", "2", "dist-nn-train", "model.name=mlp",
                                "train.epochs=1000", "log.plots=false", f"log.run_dir={run_dir}"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        job.send_signal(sig)
        out, err = job.communicate(timeout=120)
        assert job.returncode == code, f"{delay} s: exit {job.returncode}\n{out}\n{err}"
        assert sum((out + err).count(said) for said in SAID) == 1, f"{delay} s\n{out}\n{err}"
        assert "Traceback" not in err and "signal" not in err.replace("launcher: SIG", ""), err
        if "the checkpoint of step" in out:
            assert list((run_dir / "checkpoints").glob("step-*.h5"))
        assert not processes_of(run_dir)


@pytest.mark.slow
def test_ctrl_c_to_the_train_script_during_its_imports_is_130_without_a_traceback(installed,
                                                                                  tmp_path):
    bin_dir, _, kind = installed
    if kind == "editable":
        pytest.skip("the same scripts as the wheel's")
    env = script_environment(bin_dir)
    for delay in (0.1, 0.3, 1.0):
        job = subprocess.Popen(["dist-nn-train", "model.name=mlp", "log.plots=false",
                                f"log.run_dir={tmp_path / str(delay)}"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        job.send_signal(signal.SIGINT)
        out, err = job.communicate(timeout=120)
        assert job.returncode == 130, f"{delay} s: exit {job.returncode}\n{out}\n{err}"
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


@pytest.mark.slow
def test_ctrl_c_twice_through_the_launcher_stops_at_once_with_130(installed, tmp_path):
    bin_dir, _, kind = installed
    if kind == "editable":
        pytest.skip("the same scripts as the wheel's")
    run_dir = tmp_path / "run"
    job = subprocess.Popen(["dist-nn-mpirun", "-n", "2", "dist-nn-train", "model.name=mlp",
                            "train.epochs=1000", "log.plots=false", "log.every_steps=1",
                            f"log.run_dir={run_dir}"], cwd=tmp_path,
                           env=script_environment(bin_dir), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (run_dir / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    for rank in (1, 2):
        job.send_signal(signal.SIGINT)
        time.sleep(0.02)  # the second press comes before the ranks stopped
    out, err = job.communicate(timeout=60)
    assert job.returncode == 130, f"exit {job.returncode}\n{out}\n{err}"
    assert err.strip().splitlines()[-1] == \
        "launcher: SIGINT again: killed the job without a checkpoint", err
    assert "Assertion" not in err and "Traceback" not in err, err
    assert not processes_of(run_dir)
