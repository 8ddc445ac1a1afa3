"""End to end: `python -m dist_nn.train` under a real mpiexec (2 ranks unless said)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dist_nn import checkpoint
from dist_nn.monitor import read_records
from launch import mpirun

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(mpirun.mpiexec_path() is None, reason="no mpiexec")]
SMALL = ["model.name=mlp", "model.hidden=[32]", "log.plots=false", "log.tensorboard=off"]


def run(ranks, run_dir, *arguments, module="dist_nn.train", timeout=300):
    """Run a dist_nn command on `ranks` ranks; the CompletedProcess."""
    argv = [sys.executable, "-m", module, *map(str, arguments)]
    if module == "dist_nn.train" and run_dir is not None:
        argv.append(f"log.run_dir={run_dir}")
    return mpirun.run(ranks, argv, env={"PYTHONPATH": str(ROOT)}, capture_output=True,
                      text=True, timeout=timeout, cwd=ROOT)


def ok(done):
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def final_model(run_dir):
    _, path = checkpoint.step_checkpoints(Path(run_dir) / "checkpoints")[0]
    return checkpoint.read(path)[0]


def test_default_run_learns_the_digits(tmp_path):
    """No arguments but the run directory: the cnn on the embedded digits, >= 97%."""
    done = ok(run(2, tmp_path / "run"))
    records = read_records(tmp_path / "run")
    val = [r for r in records if r["split"] == "val"]
    assert len(val) == 20 and val[-1]["accuracy"] >= 0.97, val[-1]
    train_records = [r for r in records if r["split"] == "train" and r.get("scope") != "epoch"]
    assert {"loss", "accuracy", "lr", "samples_per_s", "time", "epoch", "step"} <= set(
        train_records[0])
    epoch_record = [r for r in records if r.get("scope") == "epoch"][-1]
    assert {"data_wait", "compute", "allreduce_wait", "optimizer"} <= set(epoch_record)
    assert (tmp_path / "run" / "config.toml").exists()
    assert (tmp_path / "run" / "checkpoints" / "best.h5").exists()
    assert "done: 440 steps, 20 epochs" in done.stdout
    assert done.stdout.count("run directory:") == 1  # rank 0 speaks


EXACT = SMALL + ["train.dtype=float64", "model.dropout=0.2", "train.max_steps=30",
                 "checkpoint.every_steps=13", "checkpoint.keep=5", "augment.enabled=true",
                 "augment.crop=1", "augment.noise=0.05", "optim.name=adam"]


def test_resume_is_exact(tmp_path):
    """13 steps, a checkpoint in mid-epoch, resumed in a new process: the parameters after
    steps 26 and 30 equal those of the uninterrupted run bit for bit (float64, dropout,
    augmentation, Adam, cosine schedule)."""
    ok(run(2, tmp_path / "straight", *EXACT))
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "straight" / "checkpoints" / "step-000000013.h5",
                resumed / "checkpoints")
    done = ok(run(2, resumed, *EXACT, "--resume", "auto"))
    assert "resumed from" in done.stdout and "step 13" in done.stdout
    for step in (26, 30):
        name = f"step-{step:09d}.h5"
        a = checkpoint.read(tmp_path / "straight" / "checkpoints" / name)
        b = checkpoint.read(resumed / "checkpoints" / name)
        for key in a[0]:
            np.testing.assert_array_equal(a[0][key], b[0][key], err_msg=f"{step} {key}")
        for key in a[1]["buffers"]:
            np.testing.assert_array_equal(a[1]["buffers"][key], b[1]["buffers"][key])


def test_resume_on_another_world_size(tmp_path):
    """A 2-rank checkpoint continues on 1 rank at the same global sample position."""
    base = SMALL + ["train.epochs=3", "checkpoint.every_steps=30"]
    ok(run(2, tmp_path / "run", *base, "train.max_steps=30"))
    # the recorded max_steps would end it at once: the value given now lifts it
    done = ok(run(1, tmp_path / "run", "train.max_steps=0", "--resume", "auto"))
    assert "resumed from" in done.stdout and "at epoch 1, step 30" in done.stdout
    meta = checkpoint.read(checkpoint.step_checkpoints(tmp_path / "run" / "checkpoints")[0][1])[2]
    position = meta["trainer"]["position"]
    assert (position["step"], meta["world_size"], position["epoch"]) == (66, 1, 3)
    val = [r for r in read_records(tmp_path / "run") if r["split"] == "val"]
    assert val[-1]["accuracy"] > 0.9


SHARDED = SMALL + ["train.dtype=float64", "model.dropout=0", "augment.enabled=false",
                   "optim.name=adam", "optim.weight_decay=1e-3", "schedule.name=step",
                   "schedule.step_epochs=0.5", "data.global_batch_size=48",
                   "train.max_steps=20", "train.bucket_mb=0.01", "checkpoint.every_steps=10"]


def test_sharded_run_resumes_on_another_world_size_exactly(tmp_path):
    """optim.shard=true with the weight EMA and clipping: 10 steps on 2 ranks, resumed sharded
    on 3 ranks to step 20, equal (float64, 1e-10: the reductions add in other orders) to 20
    unsharded steps of one process: parameters, the optimizer state, which the checkpoints
    hold whole (gathered on rank 0), and the averaged weights."""
    recipe = ["train.ema_decay=0.9", "optim.clip_grad_norm=0.5"]  # below every step's norm
    ok(run(1, tmp_path / "one", *SHARDED, *recipe))
    sharded = [*SHARDED, *recipe, "optim.shard=true"]
    ok(run(2, tmp_path / "sharded", *sharded, "train.max_steps=10"))
    done = ok(run(3, tmp_path / "sharded", *sharded, "--resume", "auto"))
    assert "resumed from" in done.stdout and "step 10" in done.stdout
    name = "step-000000020.h5"
    ours = checkpoint.read(tmp_path / "sharded" / "checkpoints" / name)
    reference = checkpoint.read(tmp_path / "one" / "checkpoints" / name)
    assert ours[2]["world_size"] == 3 and ours[1]["step"] == reference[1]["step"] == 20
    for key, value in reference[0].items():
        np.testing.assert_allclose(ours[0][key], value, rtol=1e-10, atol=1e-13, err_msg=key)
        np.testing.assert_allclose(ours.ema[key], reference.ema[key], rtol=1e-10, atol=1e-13,
                                   err_msg=f"EMA {key}")
    assert any(not np.array_equal(ours.ema[k], v) for k, v in ours[0].items()
               if v.dtype.kind == "f")  # the averaged weights are not the live ones
    assert set(ours[1]["buffers"]) == {"exp_avg", "exp_avg_sq"}
    for key, value in reference[1]["buffers"].items():
        np.testing.assert_allclose(ours[1]["buffers"][key], value, rtol=1e-10, atol=1e-16,
                                   err_msg=key)


def test_early_stopping_fires(tmp_path):
    done = ok(run(2, tmp_path / "run", *SMALL, "train.early_stopping_patience=2",
                  "train.early_stopping_min_delta=100", "train.epochs=10"))
    assert "early stopping: val_loss has not improved for 2 epochs" in done.stdout
    assert max(r["epoch"] for r in read_records(tmp_path / "run")) == 2  # epochs 0, 1, 2 ran


def test_exploding_loss_is_stopped(tmp_path):
    done = run(2, tmp_path / "run", *SMALL, "optim.lr=1000")
    assert done.returncode == 3, done.stderr
    assert "the run is diverging; lower the learning rate" in done.stderr \
        or "NaN/Inf" in done.stderr, done.stderr
    assert done.stderr.count("stopped:") == 1


def test_nan_in_a_layer_is_named(tmp_path):
    """A weight of layer `3` (the second Linear) is NaN in the initial weights."""
    ok(run(1, tmp_path / "source", *SMALL, "model.hidden=[32, 16]", "train.max_steps=1"))
    state, _, meta = checkpoint.read(checkpoint.step_checkpoints(
        tmp_path / "source" / "checkpoints")[0][1])
    state["4.weight"][3, 5] = np.nan
    checkpoint.write(tmp_path / "poisoned.h5", state, meta=meta)
    done = run(2, tmp_path / "run", *SMALL, "model.hidden=[32, 16]",
               f"model.init_from={tmp_path / 'poisoned.h5'}")
    assert done.returncode == 3, done.stderr
    assert "first produced by layer `4` (Linear) (its parameters ['weight'] hold NaN/Inf)" \
        in done.stderr


def test_transfer_learning_freezes_and_replaces_the_classifier(tmp_path):
    """Train on 10 digit classes, fine-tune on a 5-class data set: the frozen first layer is
    bit-identical, the classifier has 5 outputs, the rest moved."""
    ok(run(2, tmp_path / "source", *SMALL, "train.epochs=2"))
    source = tmp_path / "source" / "checkpoints" / "best.h5"
    five = tmp_path / "five.npz"
    images, labels = np.load(ROOT / "dist_nn" / "data" / "digits.npz").values()
    keep = labels < 5
    np.savez(five, x=images[keep], y=labels[keep], x_val=images[keep][:50], y_val=labels[keep][:50])
    subprocess.run([sys.executable, "-m", "datasets", "npz", five, "--out", tmp_path / "five.h5"],
                   check=True, cwd=ROOT, capture_output=True)
    done = ok(run(2, tmp_path / "tuned", *SMALL, f"data.path={tmp_path / 'five.h5'}",
                  f"model.init_from={source}", 'model.freeze=["1"]', "train.epochs=4"))
    assert "replaced classifier ['4.bias', '4.weight']" in done.stdout
    before, after = checkpoint.read(source)[0], final_model(tmp_path / "tuned")
    np.testing.assert_array_equal(after["1.weight"], before["1.weight"])
    np.testing.assert_array_equal(after["1.bias"], before["1.bias"])
    assert after["4.weight"].shape == (5, 32)
    assert not np.array_equal(after["4.bias"][:5], before["4.bias"][:5])
    val = [r for r in read_records(tmp_path / "tuned") if r["split"] == "val"]
    assert val[-1]["accuracy"] >= 0.9


@pytest.mark.parametrize("arguments, message", [
    (["model.nme=cnn"], "unknown key model.nme; [model] has name, options, dropout"),
    (["optim.lr=fast"], "optim.lr must be a number, got 'fast'"),
    (["model.name=vgg"], "model.name must be one of mlp, cnn, resnet20"),
    (["--resume", "auto"], None),  # replaced below: needs log.run_dir
    (["model.freeze=[\"head\"]"], "model.freeze: 'head' matches no parameter"),
    (["data.path=/nonexistent.h5"], "data file '/nonexistent.h5' does not exist"),
    (["data.global_batch_size=5000"], "the training split has 1438 samples, fewer than one "
                                      "step's 5000: lower data.global_batch_size"),
    (["--resume", "/nonexistent.h5"], "cannot resume from /nonexistent.h5: checkpoint "
                                       "/nonexistent.h5 does not exist"),
])
def test_config_errors_are_reported_once(tmp_path, arguments, message):
    if message is None:  # --resume auto without a run directory
        done = mpirun.run(2, [sys.executable, "-m", "dist_nn.train", "--resume", "auto"],
                          env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
        message = "--resume auto needs log.run_dir"
    else:
        done = run(2, tmp_path / "run", *arguments)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert done.stderr.count(message) == 1


def test_resuming_another_model_is_refused(tmp_path):
    ok(run(1, tmp_path / "run", *SMALL, "train.max_steps=3"))
    done = run(2, tmp_path / "run", *SMALL, "model.hidden=[16]", "--resume", "auto")
    assert done.returncode == 2
    assert "cannot resume from" in done.stderr and "shape mismatches: 1.weight" in done.stderr


def test_evaluate_debug_and_overfit(tmp_path):
    done = ok(run(1, tmp_path / "debug", *SMALL, "train.max_steps=20", "log.debug_every=10",
                  "--debug"))
    assert "gradient check (float64" in done.stdout and "- ok" in done.stdout
    lines = (tmp_path / "debug" / "debug.jsonl").read_text().splitlines()
    report = json.loads(lines[0])
    assert set(report["dead_relu"]) == {"2"} and "1.weight" in report["update_ratio"]
    done = ok(run(2, tmp_path / "overfit", *SMALL, "train.overfit_samples=32", "train.epochs=60",
                  "data.global_batch_size=16",
                  "model.dropout=0"))
    assert "overfit: 100% training accuracy on 32 samples" in done.stdout
    final = checkpoint.step_checkpoints(tmp_path / "debug" / "checkpoints")[0][1]
    done = ok(run(2, None, final, "--data", "digits", module="dist_nn.evaluate"))
    assert "on digits (val, 359 samples)" in done.stdout and "confusion matrix" in done.stdout


def test_data_without_a_val_split_watches_training_metrics(tmp_path):
    from datasets import synthetic
    data = synthetic.convert(tmp_path / "noval.h5", 256, shape=(1, 8, 8), classes=4,
                             val_samples=0)[0]
    done = ok(run(2, tmp_path / "run", *SMALL, f"data.path={data}", "train.epochs=2",
                  "schedule.name=plateau", "train.early_stopping_patience=5"))
    assert (tmp_path / "run" / "checkpoints" / "best.h5").exists()
    assert "error" not in done.stderr and done.stdout.count("notice: ") == 1, done.stdout


def test_chunk_order_trains_alike_on_1_and_2_ranks_and_resumes_exactly(tmp_path):
    """data.order = chunks (chunks of 20 samples, windows of 3): 2 ranks equal one process
    (float64, 1e-10), and a resume at step 7 (mid-epoch) equals the straight run bit for bit."""
    from datasets import synthetic
    data = tmp_path / "d.h5"
    synthetic.convert(data, 600, shape=(1, 8, 8), classes=4, dtype="uint8", val_samples=0,
                      chunk_samples=20)
    arguments = [*SMALL, "train.dtype=float64", "model.dropout=0", f"data.path={data}",
                 "data.order=chunks", "data.shuffle_window=3", "data.global_batch_size=32",
                 "train.max_steps=20", "checkpoint.every_steps=7", "checkpoint.keep=5"]
    ok(run(1, tmp_path / "one", *arguments))
    ok(run(2, tmp_path / "two", *arguments))
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "two" / "checkpoints" / "step-000000007.h5", resumed / "checkpoints")
    ok(run(2, resumed, *arguments, "--resume", "auto"))
    for step in (14, 20):
        name = f"step-{step:09d}.h5"
        one, two, again = (checkpoint.read(path / "checkpoints" / name)[0]
                           for path in (tmp_path / "one", tmp_path / "two", resumed))
        for key in one:
            np.testing.assert_allclose(two[key], one[key], rtol=1e-10, atol=1e-13)
            np.testing.assert_array_equal(again[key], two[key])


def test_a_split_beyond_the_cache_takes_the_chunk_order_and_says_so(tmp_path):
    done = ok(run(2, tmp_path / "run", *SMALL, "data.cache_mb=0", "train.max_steps=3"))
    assert done.stdout.count('data.order = "chunks"') == 1
