"""The resume contract, end to end under `mpiexec -n 2` (README "Resume"): the checkpoint's
recorded config is the base, the values given now take effect (or are refused) and are
recorded, a run directory belongs to one run, exit 0 means its final checkpoint is there."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dist_nn import checkpoint, config
from dist_nn.monitor import read_records
from launch import mpirun

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(mpirun.mpiexec_path() is None, reason="no mpiexec")]
SMALL = ["model.name=mlp", "model.hidden=[32]", "log.plots=false", "log.tensorboard=off"]
# float64 and no dropout or augmentation: two runs that should agree agree bit for bit
EXACT = SMALL + ["train.dtype=float64", "model.dropout=0", "augment.enabled=false",
                 "optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.9", "optim.weight_decay=0",
                 "schedule.name=cosine", "schedule.warmup_epochs=0.2", "train.epochs=3",
                 "log.every_steps=1"]


def run(ranks, *arguments, cwd=ROOT):
    argv = [sys.executable, "-m", "dist_nn.train", *map(str, arguments)]
    return mpirun.run(ranks, argv, env={"PYTHONPATH": str(ROOT)}, capture_output=True,
                      text=True, timeout=300, cwd=cwd)


def ok(done):
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def refused(done, message):
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert done.stderr.count(message) == 1, done.stderr


def newest(run_dir):
    return checkpoint.step_checkpoints(Path(run_dir) / "checkpoints")[0][1]


def fingerprint(run_dir):
    """{file: sha256} of everything in a run directory but its lock."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(run_dir).rglob("*")) if p.is_file() and p.name != "run.lock"}


def with_values(source, target, **values):
    """A copy of the checkpoint `source` as a run started with `values` (optim.<name>) would
    have saved it at the same step: its config, optimizer and schedules say them."""
    model, optimizer, meta = checkpoint.read(source)
    recorded = config.loads(meta["config"], [f"optim.{k}={v}" for k, v in values.items()])
    optimizer["hyperparameters"].update(values)
    for schedule in meta["trainer"]["schedules"]:
        schedule["base"] = values["lr"]
    meta = {**meta, "config": config.to_toml(recorded)}
    target.parent.mkdir(parents=True)
    return checkpoint.write(target, model, optimizer, meta)


def test_values_given_on_resume_take_effect_and_are_recorded(tmp_path):
    """10 steps at lr 0.05, momentum 0.9, no weight decay; resumed to step 20 with lr 0.01,
    momentum 0.5, weight decay 1e-3, it trains bit for bit as a run started from the same
    state with those values, and its checkpoint records what it used."""
    ok(run(2, *EXACT, "train.max_steps=10", f"log.run_dir={tmp_path / 'first'}"))
    given = {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.001}
    done = ok(run(2, "--resume", newest(tmp_path / "first"), "train.max_steps=20",
                  *[f"optim.{k}={v}" for k, v in given.items()],
                  f"log.run_dir={tmp_path / 'resumed'}"))
    assert ("they take effect: optim.lr: 0.05 -> 0.01; optim.momentum: 0.9 -> 0.5; "
            "optim.weight_decay: 0.0 -> 0.001; train.max_steps: 10 -> 20; log.run_dir: "
            f'"{tmp_path / "first"}" -> "{tmp_path / "resumed"}"') in done.stdout
    start = with_values(newest(tmp_path / "first"), tmp_path / "start" / "step-000000010.h5",
                        **given)
    done = ok(run(2, "--resume", start, "train.max_steps=20",
                  f"log.run_dir={tmp_path / 'reference'}"))
    assert "optim." not in done.stdout  # its checkpoint says the values
    ours, reference = checkpoint.read(newest(tmp_path / "resumed")), \
        checkpoint.read(newest(tmp_path / "reference"))
    assert ours[2]["trainer"]["position"]["step"] == 20
    for key, value in reference[0].items():
        np.testing.assert_array_equal(ours[0][key], value, err_msg=key)
    np.testing.assert_array_equal(ours[1]["buffers"]["momentum_buffer"],
                                  reference[1]["buffers"]["momentum_buffer"])
    lrs = [[r["lr"] for r in read_records(tmp_path / name) if r["split"] == "train"]
           for name in ("resumed", "reference")]
    assert lrs[0] == lrs[1] and max(lrs[0]) <= 0.01
    recorded = config.loads(ours[2]["config"])
    assert (recorded.optim.lr, recorded.optim.momentum, recorded.optim.weight_decay) == \
        (0.01, 0.5, 0.001)
    assert {k: ours[1]["hyperparameters"][k] for k in ("momentum", "weight_decay")} == \
        {"momentum": 0.5, "weight_decay": 0.001}


MODEL = '''
from dist_nn import nn


def tiny(input_shape, num_classes, comm=None, width=8):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU(),
                         nn.Linear(width, num_classes))
'''


def test_resume_auto_of_a_run_of_ones_own_model_needs_only_the_run_directory(tmp_path):
    """The recorded config is the base: no model.name repeated, none of the first start's
    values lost, and a refused resume leaves config.toml as it was."""
    (tmp_path / "mymodels.py").write_text(MODEL)
    run_dir = tmp_path / "runs" / "mine"
    ok(run(2, "model.name=mymodels:tiny", "model.options.width=12", "optim.lr=0.007",
           "train.epochs=3", "train.max_steps=6", "log.plots=false", "log.tensorboard=off",
           "log.run_dir=runs/mine", cwd=tmp_path))
    recorded = (run_dir / "config.toml").read_text()
    checked = subprocess.run([sys.executable, "-m", "dist_nn.config", "log.run_dir=runs/mine",
                              "--resume", "auto"], capture_output=True, text=True, cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert config.loads(checked.stdout).model.name == "mymodels:tiny"  # as training sees it
    # from elsewhere, a checkpoint does not choose code: the user names it
    elsewhere = ["--resume", newest(run_dir), "log.run_dir=runs/other"]
    refused(run(2, *elsewhere, cwd=tmp_path), "records the model 'mymodels:tiny', which is not "
            "built in: a checkpoint does not choose the code that runs; name it now "
            "(model.name=mymodels:tiny) to build it")
    assert not (tmp_path / "runs" / "other").exists()
    ok(run(2, *elsewhere, "model.name=mymodels:tiny", cwd=tmp_path))
    refused(run(2, "log.run_dir=runs/mine", "model.options.width=16", "--resume", "auto",
                cwd=tmp_path), "shape mismatches")
    assert (run_dir / "config.toml").read_text() == recorded
    done = ok(run(2, "log.run_dir=runs/mine", "--resume", "auto", cwd=tmp_path))
    assert "differ" not in done.stdout and "at epoch 0, step 6" in done.stdout
    done = ok(run(2, "--config", "runs/mine/config.toml", "train.max_steps=9", "--resume",
                  "auto", cwd=tmp_path))
    assert "they take effect: train.max_steps: 6 -> 9" in done.stdout
    meta = checkpoint.read(newest(run_dir))[2]
    c = config.loads(meta["config"])
    assert (c.model.name, c.model.options, c.optim.lr, c.train.epochs) == \
        ("mymodels:tiny", {"width": 12}, 0.007, 3)
    assert meta["trainer"]["position"]["step"] == 9
    starts = [json.loads(line) for line in (run_dir / "starts.jsonl").open()]
    assert len(starts) == 3 and len({s["run_id"] for s in starts}) == 1
    assert [config.loads(s["config"]).train.max_steps for s in starts] == [6, 6, 9]


def test_a_run_directory_belongs_to_one_run(tmp_path):
    """Run A's checkpoint resumed into C's directory is refused, C untouched; into a new
    directory it starts a new run there whose final checkpoint is on disk when it exits 0."""
    a, c, d = tmp_path / "a", tmp_path / "c", tmp_path / "d"
    ok(run(2, *SMALL, "train.max_steps=5", f"log.run_dir={a}"))
    ok(run(2, *SMALL, "train.max_steps=8", f"log.run_dir={c}"))
    before = fingerprint(c)
    refused(run(2, "--resume", newest(a), f"log.run_dir={c}"),
            f"the run directory {c} holds another run's checkpoints (step-000000008.h5")
    assert fingerprint(c) == before
    done = ok(run(2, "--resume", newest(a), f"log.run_dir={d}"))  # a finished run
    assert [p.name for p in checkpoint.all_checkpoints(d / "checkpoints")] == \
        ["step-000000005.h5"]
    origin, continued = checkpoint.read(newest(a))[2], checkpoint.read(newest(d))[2]
    assert continued["run_id"] != origin["run_id"]
    start = json.loads((d / "starts.jsonl").read_text())
    assert (start["resumed_from"], start["resumed_run_id"]) == \
        (str(newest(a)), origin["run_id"])
    assert f"done: 5 steps, 0 epochs; run directory {d}" in done.stdout
    # A's own checkpoint, copied away and resumed into A's directory, continues run A
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / "step-000000005.h5"
    copy.write_bytes(newest(a).read_bytes())
    ok(run(2, "--resume", copy, "train.max_steps=7", f"log.run_dir={a}"))
    assert checkpoint.read(newest(a))[2]["run_id"] == origin["run_id"]


def test_log_overwrite_removes_everything_of_the_old_run(tmp_path):
    run_dir = tmp_path / "run"
    ok(run(2, *SMALL[:-1], "log.tensorboard=on", "train.max_steps=4", f"log.run_dir={run_dir}"))
    assert os.listdir(run_dir / "tensorboard")
    ok(run(2, *SMALL, "train.max_steps=2", "log.every_steps=1", "log.overwrite=true",
           f"log.run_dir={run_dir}"))
    assert not (run_dir / "tensorboard").exists()
    assert [r["step"] for r in read_records(run_dir) if r["split"] == "train"] == [1, 2]
    assert len((run_dir / "starts.jsonl").read_text().splitlines()) == 1
