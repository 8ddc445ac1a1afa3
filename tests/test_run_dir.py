"""The run directory belongs to one run: the lock, the run id of its checkpoints, places that
cannot hold a run, symbolic links, and a full disk for the records of a start."""
import json
import os
import subprocess

import pytest

from dist_nn import checkpoint, config, run_dir
from dist_nn.distributed import LocalCommunicator

COMM = LocalCommunicator()


def claim(path, *overrides, resume=None, origin=None, warnings=None):
    c = config.load(None, [f"log.run_dir={path}", *overrides])
    said = [] if warnings is None else warnings
    return run_dir.claim(c, COMM, resume, origin,
                         warn=lambda message, **_: said.append(message))


def checkpoint_of(run_id, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return checkpoint.write(path, {"w": [1.0]}, meta={"run_id": run_id})


def test_a_claimed_directory_is_locked_and_written_only_once_the_start_is_accepted(tmp_path):
    run = claim(tmp_path / "run")
    assert sorted(os.listdir(tmp_path / "run")) == ["run.lock"]
    with pytest.raises(config.ConfigError, match=r"is in use by a live run \(pid \d+ on "):
        claim(tmp_path / "run")
    run.record_start(config.load(None, ["optim.lr=0.25"]), "elsewhere/step-000000007.h5",
                     "origin-id")
    run.record_start(config.load(None, ["optim.lr=0.5"]))
    assert run.checkpoints.is_dir()
    assert config.load(tmp_path / "run" / "config.toml").optim.lr == 0.5  # the newest start
    starts = [json.loads(line) for line in (tmp_path / "run" / "starts.jsonl").open()]
    assert [s["resumed_from"] for s in starts] == ["elsewhere/step-000000007.h5", None]
    assert [s["resumed_run_id"] for s in starts] == ["origin-id", None]
    assert [config.loads(s["config"]).optim.lr for s in starts] == [0.25, 0.5]
    assert {s["run_id"] for s in starts} == {run.run_id}
    run.release()  # the lock dies with its holder (here: its descriptor)
    claim(tmp_path / "run").release()


def test_only_the_run_of_its_checkpoints_continues_in_a_directory(tmp_path):
    path = tmp_path / "run"
    checkpoint_of("run-a", path / "checkpoints" / "step-000000005.h5")
    checkpoint_of("run-a", path / "checkpoints" / checkpoint.BEST)
    (path / "metrics.jsonl").write_text("{}\n")
    (path / "tensorboard").mkdir()
    (path / "tensorboard" / "events.out").write_text("old")
    (path / "checkpoints" / "step-000000006.h5.partial").write_text("a crash's leftover")
    copy = checkpoint_of("run-a", tmp_path / "copied" / "step-000000005.h5")
    other = checkpoint_of("run-b", tmp_path / "b" / "step-000000009.h5")
    with pytest.raises(config.ConfigError, match=r"holds another run's checkpoints "
                       r"\(step-000000005.h5, best.h5\): continue that run with --resume "
                       r"auto, start a fresh run there with log.overwrite=true"):
        claim(path)
    with pytest.raises(config.ConfigError, match=f"start resuming {other} there with "
                                                 "log.overwrite=true"):
        claim(path, resume=str(other), origin="run-b")
    run = claim(path, resume="auto", origin="run-a")
    assert run.run_id == "run-a"
    run.release()
    run = claim(path, resume=str(copy), origin="run-a")  # its own run, copied elsewhere
    assert run.run_id == "run-a"
    run.release()
    run = claim(tmp_path / "new", resume=str(other), origin="run-b")
    assert run.run_id not in ("run-a", "run-b")  # a new run, which records its origin
    run.release()
    warnings = []
    run = claim(path, "log.overwrite=true", resume=str(other), origin="run-b",
                warnings=warnings)
    assert "deleted the previous run's checkpoints (step-000000005.h5, best.h5)" in warnings[0]
    assert sorted(os.listdir(path)) == ["checkpoints", "run.lock"]
    assert not os.listdir(path / "checkpoints")
    assert run.run_id != "run-b"
    run.release()


def test_the_runs_files_are_never_written_through_a_symbolic_link(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    for name in ("run.lock", "config.toml", "metrics.jsonl", "starts.jsonl"):
        path = tmp_path / name.replace(".", "-")
        path.mkdir()
        (path / name).symlink_to(victim)
        with pytest.raises(config.ConfigError, match=f"{path / name} is a symbolic link"):
            claim(path)
    assert victim.read_text() == "keep me"


def test_places_that_cannot_hold_a_run(tmp_path, tiny_tmpfs):
    (tmp_path / "file").write_text("")
    with pytest.raises(config.ConfigError, match="file is a file, not a directory"):
        claim(tmp_path / "file")
    with pytest.raises(config.ConfigError, match="is on a system file system"):
        claim("/proc/self/run")
    read_only = tiny_tmpfs("64k")
    subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
    with pytest.raises(config.ConfigError, match="cannot write into the run directory .*: "
                                                 "Read-only file system"):
        claim(read_only / "run")


def test_the_records_of_a_start_on_a_full_disk_are_said_and_the_run_goes_on(tiny_tmpfs):
    disk = tiny_tmpfs("64k")
    run = claim(disk / "run")
    with pytest.raises(OSError, match="No space left"), open(disk / "filler", "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    warnings = []
    run.record_start(config.load(None), warn=lambda message, **_: warnings.append(message))
    assert not (disk / "run" / "config.toml").exists()
    assert warnings == [f"warning: could not record this start in {disk / 'run'} (No space "
                        "left on device); the run goes on"]
    run.release()
