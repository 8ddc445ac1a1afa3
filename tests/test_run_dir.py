"""The run directory belongs to one run: the lock, another run's checkpoints, places that
cannot hold a run, and a full disk for config.toml."""
import pytest

from dist_nn import checkpoint, config, run_dir
from dist_nn.distributed import LocalCommunicator

COMM = LocalCommunicator()


def claim(path, *overrides, resume=None, warnings=None):
    c = config.load(None, [f"log.run_dir={path}", *overrides])
    said = [] if warnings is None else warnings
    return run_dir.claim(c, COMM, resume, warn=lambda message, **_: said.append(message))


def test_a_claimed_directory_holds_the_config_and_refuses_a_second_run(tmp_path):
    run = claim(tmp_path / "run")
    assert config.load(tmp_path / "run" / "config.toml").log.run_dir == str(tmp_path / "run")
    assert run.checkpoints.is_dir()
    with pytest.raises(config.ConfigError, match=r"is in use by a live run \(pid \d+ on "):
        claim(tmp_path / "run")
    run.release()  # the lock dies with its holder (here: its descriptor)
    claim(tmp_path / "run").release()


def test_another_runs_checkpoints_are_refused_unless_resumed_or_overwritten(tmp_path):
    path = tmp_path / "run"
    claim(path).release()
    checkpoint.write(path / "checkpoints" / "step-000000005.h5", {"w": [1.0]})
    checkpoint.write(path / "checkpoints" / checkpoint.BEST, {"w": [1.0]})
    (path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(config.ConfigError, match=r"holds another run's checkpoints "
                       r"\(step-000000005.h5, best.h5\): continue it with --resume auto"):
        claim(path)
    claim(path, resume="auto").release()
    warnings = []
    claim(path, "log.overwrite=true", warnings=warnings).release()
    assert "deleted the previous run's checkpoints (step-000000005.h5, best.h5)" in warnings[0]
    assert not checkpoint.all_checkpoints(path / "checkpoints")
    assert not (path / "metrics.jsonl").exists()


def test_places_that_cannot_hold_a_run(tmp_path, tiny_tmpfs):
    (tmp_path / "file").write_text("")
    with pytest.raises(config.ConfigError, match="file is a file, not a directory"):
        claim(tmp_path / "file")
    with pytest.raises(config.ConfigError, match="is on a system file system"):
        claim("/proc/self/run")
    read_only = tiny_tmpfs("64k")
    import subprocess
    subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
    with pytest.raises(config.ConfigError, match="cannot write into the run directory .*: "
                                                 "Read-only file system"):
        claim(read_only / "run")


def test_config_toml_on_a_full_disk_is_said_and_the_run_goes_on(tiny_tmpfs):
    disk = tiny_tmpfs("64k")
    (disk / "filler").write_bytes(b"\0" * 64 * 1024)
    warnings = []
    run = claim(disk / "run", warnings=warnings)
    assert run.checkpoints.is_dir() and not (disk / "run" / "config.toml").exists()
    assert warnings == [f"warning: could not write {disk / 'run' / 'config.toml'} (No space "
                        "left on device); the run goes on"]
    run.release()
