"""train.grad_compression end to end: `python -m dist_nn.train` on 2 ranks resumes a compressed
run exactly (PowerSGD's Q and every rank's error feedback are in the checkpoint), learns the
digits, and refuses what does not combine with one message."""
import os
import shutil
import sys

import numpy as np
import pytest

from dist_nn import checkpoint
from dist_nn.monitor import read_records
from launch import mpirun
from tests.test_train import ROOT, SMALL, ok, run

pytestmark = pytest.mark.slow
EXACT = SMALL + ["train.dtype=float64", "model.dropout=0", "augment.enabled=false",
                 "train.max_steps=24", "checkpoint.every_steps=11", "checkpoint.keep=5",
                 "optim.name=sgd", "optim.momentum=0.9", "model.hidden=[64,32]"]


@pytest.mark.parametrize("compression", ["fp16", "powersgd"])
def test_a_compressed_run_resumes_exactly(tmp_path, compression):
    """Resumed at step 11 in new processes, steps 22 and 24 equal the uninterrupted run's bit
    for bit: parameters, momentum and (PowerSGD) Q and both ranks' errors."""
    arguments = [*EXACT, f"train.grad_compression={compression}", "train.powersgd_rank=2"]
    ok(run(2, tmp_path / "straight", *arguments))
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "straight" / "checkpoints" / "step-000000011.h5",
                resumed / "checkpoints")
    done = ok(run(2, resumed, *arguments, "--resume", "auto"))
    assert "step 11" in done.stdout
    for step in (22, 24):
        name = f"step-{step:09d}.h5"
        a = checkpoint.read(tmp_path / "straight" / "checkpoints" / name)
        b = checkpoint.read(resumed / "checkpoints" / name)
        for group_a, group_b in ((a[0], b[0]), (a[1]["buffers"], b[1]["buffers"]),
                                 (a.compression or {}, b.compression or {})):
            assert group_a.keys() == group_b.keys()
            for key in group_a:
                np.testing.assert_array_equal(group_a[key], group_b[key], err_msg=key)
    if compression == "powersgd":
        errors = a.compression["error"]
        assert errors.shape[0] == 2 and not np.array_equal(errors[0], errors[1])
        assert np.abs(errors).max() > 0
    else:  # fp16's scale of each bucket, powers of two
        scales = a.compression["scales"]
        assert scales.shape == (1,) and np.log2(scales[0]) == round(np.log2(scales[0])) > 0


def test_forged_powersgd_state_is_one_message(tmp_path):
    """PowerSGD's state with a Q of the wrong shape (under a valid checksum) is one message."""
    arguments = [*EXACT, "train.grad_compression=powersgd", "train.powersgd_rank=2",
                 "train.max_steps=11"]
    ok(run(2, tmp_path / "run", *arguments))
    path = checkpoint.step_checkpoints(tmp_path / "run" / "checkpoints")[0][1]
    contents = checkpoint.read(path)
    forged = dict(contents.compression, **{"q.0": np.ones((3, 3))})
    forged_path = checkpoint.write(tmp_path / "forged.h5", *contents, contents.ema, forged)
    done = run(2, tmp_path / "other", *arguments, "train.max_steps=12", "--resume",
               forged_path)
    assert done.returncode == 2
    assert "grad_compression (powersgd): q.0 has shape (3, 3), expected" in done.stderr


@pytest.mark.parametrize("compression", ["fp16", "bf16", "powersgd"])
def test_each_compression_learns_the_digits(tmp_path, compression):
    """The MLP on the digits, 5 epochs on 2 ranks: above 90% validation accuracy, with the
    bytes of the compressed collectives (skipped steps recorded for fp16)."""
    ok(run(2, tmp_path / "run", *SMALL, "train.epochs=5", "model.hidden=[128]",
           f"train.grad_compression={compression}"))
    records = read_records(tmp_path / "run")
    val = [r for r in records if r["split"] == "val"]
    assert val[-1]["accuracy"] > 0.9, val[-1]
    train = [r for r in records if r["split"] == "train" and r.get("scope") != "epoch"]
    assert ("skipped_steps" in train[0]) == (compression == "fp16")


@pytest.mark.parametrize("arguments, message", [
    (["train.grad_compression=powersgd", "optim.shard=true"], "does not combine with optim"),
    (["train.grad_compression=powersgd", "train.amp=fp16"], "does not combine with train.amp"),
    (["train.powersgd_rank=0"], "train.powersgd_rank must be in [1, 1024], got 0"),
])
def test_what_does_not_combine_is_one_message(tmp_path, arguments, message):
    done = run(2, tmp_path / "run", *SMALL, *arguments)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


AMPLIFIED = '''
from dist_nn import nn


class Amplify(nn.Module):
    """x * 1e15: gradients of the next layer's weight beyond float16's 65504 even when scaled
    by fp16 compression's smallest scale, 2^-24."""

    def forward(self, x):
        return x * 1e15

    def backward(self, grad):
        return grad * 1e15


def build(input_shape, num_classes, comm=None):
    return nn.Sequential(nn.Flatten(), Amplify(), nn.Linear(64, num_classes))
'''


def test_fp16_sums_that_keep_overflowing_stop_the_run(tmp_path):
    """Each step's synchronised gradient is Inf in float16: skipped on both ranks while the
    scale backs off, and after 8 in a row the run stops with one message (exit 3) instead of
    skipping for ever."""
    (tmp_path / "amplified.py").write_text(AMPLIFIED)
    argv = [sys.executable, "-m", "dist_nn.train", "model.name=amplified:build",
            "train.grad_compression=fp16", "log.plots=false", "log.tensorboard=off",
            f"log.run_dir={tmp_path / 'run'}"]
    done = mpirun.run(2, argv, env={"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"},
                      capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("stopped: the synchronised gradient overflowed float16 "
                             "(train.grad_compression = \"fp16\") in 8 steps in a row") == 1, \
        done.stderr


@pytest.mark.parametrize("arguments", [
    ["train.grad_compression=fp16", "optim.accumulate=2", "optim.clip_grad_norm=0.5",
     "train.amp=fp16", "optim.shard=true", "optim.name=adam"],
    ["train.grad_compression=bf16", "optim.accumulate=2", "optim.clip_grad_norm=0.5",
     "train.amp=bf16", "optim.shard=true", "train.ema_decay=0.9"],
    ["train.grad_compression=powersgd", "optim.accumulate=2", "optim.clip_grad_norm=0.5",
     "train.amp=bf16", "train.ema_decay=0.9", "model.name=cnn"],
], ids=["fp16+zero+amp", "bf16+zero+amp", "powersgd+amp+cnn"])
def test_compression_combines_with_accumulation_clipping_precision_and_zero(tmp_path,
                                                                           arguments):
    """Each combination the docs call supported trains 8 epochs (88 steps) on 2 ranks and
    learns the digits."""
    ok(run(2, tmp_path / "run", *SMALL, "train.epochs=8", "model.hidden=[64]", *arguments))
    val = [r for r in read_records(tmp_path / "run") if r["split"] == "val"]
    assert val[-1]["accuracy"] > 0.85, val[-1]
