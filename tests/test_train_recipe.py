"""The training recipe end to end under a real mpiexec (2 ranks): fp16 mixed precision learns
the digits, an absurd initial loss scale skips the first steps alike on every rank and then
converges, resume with amp, EMA and clipping is bit-exact, grad_norm is logged; under ZeRO-1
(optim.shard) fp16 skips the steps the unsharded run skips and the CLI runs with EMA; bf16
without ml_dtypes is a configuration error."""
import json
import shutil

import numpy as np
import pytest

from dist_nn import checkpoint
from dist_nn.monitor import read_records
from tests.distributed import mpi
from tests.test_train import ROOT, SMALL, ok, run

pytestmark = [pytest.mark.slow, mpi.needs_mpi]
SMALL_CNN = ["model.channels=[16,32]", "model.fc=64", "log.plots=false", "log.tensorboard=off"]


def test_fp16_cnn_learns_the_digits(tmp_path):
    """train.amp=fp16 with clipping: >= 98% validation accuracy, the gradient norm and the
    loss scale in every training record, best.h5 written."""
    ok(run(2, tmp_path / "run", *SMALL_CNN, "train.amp=fp16", "optim.clip_grad_norm=5",
           "train.epochs=10"))
    records = read_records(tmp_path / "run")
    val = [r for r in records if r["split"] == "val"]
    assert max(r["accuracy"] for r in val) >= 0.98, val
    steps = [r for r in records if r["split"] == "train" and r.get("scope") != "epoch"]
    assert all(r["grad_norm"] > 0 and r["loss_scale"] > 0 for r in steps)
    assert (tmp_path / "run" / "checkpoints" / "best.h5").exists()


def test_absurd_initial_scale_skips_alike_then_converges(tmp_path):
    """The loss scale starts at 2^40: the first ~25 steps overflow float16 and are skipped,
    halving the scale each time, on both ranks alike (same count, same final parameters to
    the bit); then the run learns."""
    prefix = tmp_path / "out"
    done = mpi.launch(2, "absurd_scale", prefix, tmp_path / "run", *SMALL_CNN,
                      "train.epochs=6", timeout=600)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    ranks = [json.loads((tmp_path / f"out-{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # the same skipped steps, scale and parameters on both
    assert 20 <= ranks[0]["skipped"] <= 30 and ranks[0]["scale"] < 2.0**16
    assert ranks[0]["val_accuracy"] > 0.93


def test_sharded_fp16_skips_the_same_steps_as_unsharded(tmp_path):
    """optim.shard=true under fp16 with the absurd initial scale, 2 ranks: each rank sees only
    its shard's gradient, yet both skip the same steps as the unsharded run, with the same
    loss scale at every step and the same final parameters to the bit (float32: with 2 ranks
    reduce-scatter and allreduce add the same two values; no clipping, whose norm is summed
    in another order)."""
    seen = {}
    for shard in ("false", "true"):
        prefix = tmp_path / f"out-{shard}"
        done = mpi.launch(2, "absurd_scale", prefix, tmp_path / shard, *SMALL,
                          "optim.name=adam", "train.max_steps=40", "log.every_steps=1",
                          f"optim.shard={shard}", timeout=300)
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        ranks = [json.loads((tmp_path / f"out-{shard}-{r}.json").read_text()) for r in range(2)]
        assert ranks[0] == ranks[1]  # the same skipped steps, scale and parameters on both
        scales = [r["loss_scale"] for r in read_records(tmp_path / shard)
                  if r["split"] == "train" and r.get("scope") != "epoch"]
        seen[shard] = ranks[0], scales
    assert seen["true"] == seen["false"]
    assert 15 <= seen["true"][0]["skipped"] < 40 and len(seen["true"][1]) == 40


def test_sharded_cli_run_with_fp16_and_ema_finishes(tmp_path):
    """optim.shard=true train.amp=fp16 train.ema_decay=0.99 on 2 ranks through the CLI: exit
    0, the final checkpoint holds the averaged weights and the loss scaler's state."""
    done = ok(run(2, tmp_path / "run", *SMALL, "optim.shard=true", "train.amp=fp16",
                  "train.ema_decay=0.99", "optim.clip_grad_norm=1", "train.max_steps=20"))
    assert "done: 20 steps" in done.stdout
    final = checkpoint.read(tmp_path / "run" / "checkpoints" / "step-000000020.h5")
    assert final.ema is not None and sorted(final.ema) == sorted(final[0])
    assert final[2]["trainer"]["recipe"]["scaler"]["scale"] > 0 and final[1]["step"] > 0


@pytest.mark.parametrize("missing, argument, message", [
    ("ml_dtypes", "train.amp=bf16", "error: train.amp = 'bf16': bf16 needs the ml_dtypes package"),
    ("tensorboard", "log.tensorboard=on",
     "error: log.tensorboard = \"on\" needs the tensorboard package"),
])
def test_an_optional_package_asked_for_but_missing_is_a_configuration_error(
        tmp_path, missing, argument, message):
    """A package that cannot be imported (a module of its name placed first on the path):
    exit 2 with one message, no traceback, nothing trained."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / f"{missing}.py").write_text(f"raise ImportError('{missing} is blocked here')\n")
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "dist_nn.train", *SMALL, argument,
                           f"log.run_dir={tmp_path / 'run'}"],
                          env={"PYTHONPATH": f"{blocker}:{ROOT}", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    assert not list((tmp_path / "run").rglob("*.h5"))


RECIPE = SMALL + ["train.amp=fp16", "optim.clip_grad_norm=0.5", "train.ema_decay=0.9",
                  "train.label_smoothing=0.1", "model.dropout=0.2", "train.max_steps=30",
                  "checkpoint.every_steps=13", "checkpoint.keep=5", "augment.enabled=true",
                  "augment.crop=1", "optim.name=adam", "model.batch_norm=true"]


def test_resume_with_amp_ema_and_clipping_is_exact(tmp_path):
    """A checkpoint at step 13 resumed in a new process: at steps 26 and 30 the weights, the
    optimizer state, the averaged weights and the loss scaler equal those of the
    uninterrupted run bit for bit."""
    ok(run(2, tmp_path / "straight", *RECIPE))
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "straight" / "checkpoints" / "step-000000013.h5",
                resumed / "checkpoints")
    done = ok(run(2, resumed, *RECIPE, "--resume", "auto"))
    assert "resumed from" in done.stdout
    for step in (26, 30):
        name = f"step-{step:09d}.h5"
        a = checkpoint.read(tmp_path / "straight" / "checkpoints" / name)
        b = checkpoint.read(resumed / "checkpoints" / name)
        assert a.ema is not None and sorted(a.ema) == sorted(a[0])
        for group_a, group_b in ((a[0], b[0]), (a.ema, b.ema),
                                 (a[1]["buffers"], b[1]["buffers"])):
            for key in group_a:
                np.testing.assert_array_equal(group_a[key], group_b[key], err_msg=f"{step} {key}")
        recipes = a[2]["trainer"]["recipe"], b[2]["trainer"]["recipe"]
        assert recipes[0] == recipes[1] and recipes[0]["scaler"]["scale"] > 0
        assert any(not np.array_equal(a.ema[k], v) for k, v in a[0].items()
                   if v.dtype.kind == "f")  # the averaged weights are not the live ones
