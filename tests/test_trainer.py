"""dist_nn.Trainer and users' own models: the user workflow of docs/training.md run from a
directory outside the repository, builder errors, a model object, fine-tuning and spikes past
the guards. Distributed runs start a real mpiexec (2 ranks)."""
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from dist_nn import Trainer, checkpoint, nn
from dist_nn.trainer import StoppedBySignal
from dist_nn.config import ConfigError
from dist_nn.distributed import LocalCommunicator
from dist_nn.monitor import read_records
from launch import mpirun

ROOT = Path(__file__).resolve().parents[1]
needs_mpiexec = pytest.mark.skipif(mpirun.mpiexec_path() is None, reason="no mpiexec")
QUIET = ["log.plots=false", "log.tensorboard=off"]


def run(ranks, argv, cwd, timeout=300):
    return mpirun.run(ranks, [sys.executable, *map(str, argv)], env={"PYTHONPATH": str(ROOT)},
                      capture_output=True, text=True, timeout=timeout, cwd=cwd)


def ok(done):
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def readme_files():
    """{file name: text} of docs/training.md's python blocks that start with `# NAME.py`."""
    readme = (ROOT / "docs" / "training.md").read_text()
    blocks = re.findall(r"```python\n# (\w+\.py)[^\n]*\n(.*?)```", readme, re.S)
    return {name: text for name, text in blocks}


@pytest.mark.slow
@needs_mpiexec
def test_the_readme_user_workflow_runs_outside_the_repository(tmp_path):
    """Own builder, own data file, CLI and script on 2 ranks, resume, evaluate."""
    files = readme_files()
    assert {"mymodels.py", "make_data.py", "train_mine.py"} <= set(files)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    ok(run(1, ["make_data.py"], tmp_path))
    ok(run(2, ["-m", "dist_nn.train", "model.name=mymodels:small_cnn",
               "model.options.width=32", "data.path=blobs.h5", "train.epochs=2",
               "log.run_dir=cli", *QUIET], tmp_path))
    first = ok(run(2, ["train_mine.py"], tmp_path))
    accuracy = float(re.search(r"val accuracy ([\d.]+) after 56 steps", first.stdout).group(1))
    assert accuracy >= 0.9, first.stdout
    again = ok(run(2, ["train_mine.py"], tmp_path))
    assert "resumed from" in again.stdout and f"val accuracy {accuracy:.3f} after 56 steps" \
        in again.stdout
    done = ok(run(2, ["-m", "dist_nn.evaluate", "runs/mine/checkpoints/best.h5", "--data",
                      "blobs.h5", "model.name=mymodels:small_cnn"], tmp_path))
    evaluated = float(re.search(r"\(val, 300 samples\): loss [\d.]+, accuracy ([\d.]+)",
                                done.stdout).group(1))
    assert evaluated >= accuracy - 6e-4  # best.h5: the best epoch, at least the last one
    saved = checkpoint.read(checkpoint.step_checkpoints(tmp_path / "runs/mine/checkpoints")[0][1])
    assert "options = {\"width\" = 32}" in saved[2]["config"]
    assert saved[0]["0.weight"].shape == (32, 1, 3, 3)


BUILDERS = '''
from dist_nn import nn

def raises(input_shape, num_classes, comm=None):
    raise RuntimeError("no GPU budget for this model")

def not_a_module(input_shape, num_classes, comm=None):
    return "a string"

def five_outputs(input_shape, num_classes, comm=None):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))

def wrong_input(input_shape, num_classes, comm=None):
    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))

def raises_on_rank_1(input_shape, num_classes, comm=None):
    if RANK == "1":
        raise RuntimeError("out of memory on this node")
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

def tanh_on_rank_1(input_shape, num_classes, comm=None):  # same names and shapes
    activation = nn.Tanh() if RANK == "1" else nn.ReLU()
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), activation, nn.Linear(16, num_classes))

import os
RANK = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK"))
'''


@pytest.mark.slow
@needs_mpiexec
@pytest.mark.parametrize("name, message", [
    ("nowhere:build", "cannot import 'nowhere': ModuleNotFoundError"),
    ("builders:missing", "'builders' has no function 'missing'"),
    ("builders:raises", "cannot be built for inputs (1, 8, 8) and 10 classes: RuntimeError: "
                        "no GPU budget for this model"),
    ("builders:not_a_module", "the builder returned str, not a dist_nn nn.Module"),
    ("builders:five_outputs", "to outputs of shape (2, 5); the data needs (2, 10)"),
    ("builders:wrong_input", "does not fit inputs of shape (1, 8, 8): its forward pass fails"),
    ("builders:raises_on_rank_1", "rank 1: model 'builders:raises_on_rank_1' cannot be built "
                                  "for inputs (1, 8, 8) and 10 classes: RuntimeError: out of "
                                  "memory on this node"),
    ("builders:tanh_on_rank_1", "ranks [1] compute another function than rank 0 with the "
                                "same weights"),
])
def test_builder_errors_are_one_message_and_exit_2(tmp_path, name, message):
    (tmp_path / "builders.py").write_text(BUILDERS)
    done = run(2, ["-m", "dist_nn.train", f"model.name={name}", "log.run_dir=run", *QUIET],
               tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count(message) == 1 and "Traceback" not in done.stderr, done.stderr


def test_a_model_object_and_a_config_object_in_one_process(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    from dist_nn import config
    base = config.load(None, ["train.max_steps=30", f"log.run_dir={tmp_path / 'run'}", *QUIET])
    result = Trainer(base, ["optim.lr=0.1"], model=model, comm=LocalCommunicator()).fit()
    assert result["step"] == 30 and result["run_dir"] == str(tmp_path / "run")
    assert result["val_accuracy"] > 0.8 and 0 < result["val_loss"] < 1
    saved = checkpoint.read(checkpoint.step_checkpoints(tmp_path / "run" / "checkpoints")[0][1])
    assert saved[2]["model_given"] and "lr = 0.1" in saved[2]["config"]
    assert not any("ranks" in r for r in read_records(tmp_path / "run"))  # one rank
    np.testing.assert_array_equal(saved[0]["1.weight"], model.state_dict()["1.weight"])
    with pytest.raises(ConfigError, match="maps a batch of 2 inputs"):
        Trainer(overrides=[f"log.run_dir={tmp_path / 'bad'}", *QUIET],
                model=nn.Sequential(nn.Flatten(), nn.Linear(64, 3)),
                comm=LocalCommunicator()).fit()


SPIKE = '''
from dist_nn import nn

class SpikeOnce(nn.Module):
    """Scales the logits by 50 in the forward pass of training step `at` only."""
    def __init__(self, at):
        super().__init__()
        self.at, self.calls, self.scale = at, 0, 1.0

    def forward(self, x):
        if self.training:
            self.calls += 1
        self.scale = 50.0 if self.training and self.calls == self.at else 1.0
        return x * self.scale

    def backward(self, dy):
        return dy * self.scale

def spiky_mlp(input_shape, num_classes, comm=None, at=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, num_classes), SpikeOnce(at))
'''


@pytest.mark.slow
@needs_mpiexec
def test_fine_tuning_and_a_one_step_spike_run_to_the_end(tmp_path):
    """A trained model fine-tuned at lr 0.1 (its first loss is tiny) and a loss that spikes
    for one step (> 3x the first loss) and recovers both finish; the step numbers of the
    console and of metrics.jsonl agree."""
    (tmp_path / "spiky.py").write_text(SPIKE)
    small = ["model.name=mlp", "model.hidden=[32]", *QUIET]
    ok(run(2, ["-m", "dist_nn.train", *small, "train.epochs=8", "log.run_dir=source"],
           tmp_path))
    tuned = ok(run(2, ["-m", "dist_nn.train", *small, "train.epochs=2", "optim.lr=0.1",
                       "model.init_from=source/checkpoints/best.h5", "log.run_dir=tuned"],
                   tmp_path))
    assert "done: 44 steps, 2 epochs" in tuned.stdout
    spiky = ok(run(2, ["-m", "dist_nn.train", "model.name=spiky:spiky_mlp", "optim.lr=0.02",
                       "train.max_steps=40", "log.every_steps=1", "log.run_dir=spiky", *QUIET],
                   tmp_path))
    losses = {r["step"]: r["loss"] for r in read_records(tmp_path / "spiky")
              if r["split"] == "train" and r.get("scope") != "epoch"}
    assert losses[3] > 3 * losses[1] and losses[40] < losses[1], losses
    assert "step 40 (train.max_steps)" in spiky.stdout
    line = re.search(r"epoch 1 step 24 \(2/22\) loss ([\d.]+)", spiky.stderr)  # console
    assert line and abs(float(line.group(1)) - losses[24]) < 1e-4, spiky.stderr


SLEEPY = '''
import time
from dist_nn import nn

class Sleep(nn.Module):
    """Sleeps in each training forward pass: a slower rank computing the same function."""
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        if self.training:
            time.sleep(self.seconds)
        return x

    def backward(self, dy):
        return dy

def mlp(input_shape, num_classes, comm=None, slow_rank=-1):
    seconds = 0.06 if comm is not None and comm.rank == slow_rank else 0.02
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(),
                         nn.Linear(32, num_classes), Sleep(seconds))
'''


@pytest.mark.slow
@needs_mpiexec
@pytest.mark.parametrize("slow_rank, threshold", [(1, 0.2), (-1, 0.2), (1, 0)])
def test_a_slow_rank_is_named_the_straggler(tmp_path, slow_rank, threshold):
    """Rank 1 sleeps 60 ms a step, rank 0 20 ms (waiting for rank 1 in the allreduce): every
    training record names rank 1, the console once; a balanced run names none;
    log.straggler_threshold = 0 leaves the per-rank times out."""
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    done = ok(run(2, ["-m", "dist_nn.train", "model.name=sleepy:mlp",
                      f"model.options.slow_rank={slow_rank}", "train.max_steps=20",
                      "log.every_steps=5", f"log.straggler_threshold={threshold}",
                      "log.run_dir=run", *QUIET], tmp_path))
    records = [r for r in read_records(tmp_path / "run")
               if r["split"] == "train" and r.get("scope") != "epoch"]
    assert len(records) == 4
    if not threshold:
        assert not any({"ranks", "straggler", "exposed_comm_s"} & set(r) for r in records)
        assert "straggler" not in done.stdout
        return
    assert [r["straggler"] for r in records] == [None if slow_rank < 0 else 1] * 4, records
    for r in records:
        compute, waited = r["ranks"]["compute"], r["ranks"]["collective_wait"]
        assert r["exposed_comm_s"] == pytest.approx(sum(waited) / 2, abs=2e-6)
        assert len(r["ranks"]["data_wait"]) == 2
        if slow_rank == 1:
            assert compute[1] > 0.06 > compute[0] and waited[0] > waited[1], r
    said = re.findall(r"straggler: rank 1 computes \d+ ms per step, 1\.\dx the median of "
                      r"\d+ ms \(data wait \d+ ms, collective wait \d+ ms\)", done.stdout)
    assert len(said) == (slow_rank == 1) and done.stdout.count("straggler") == len(said)


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_sharding_combines_with_mixed_precision_and_ema(tmp_path, amp):
    """optim.shard=true with train.amp and train.ema_decay, one process: the same weights,
    averaged weights and loss scale as the unsharded run, bit for bit."""
    if amp == "bf16":
        pytest.importorskip("ml_dtypes", reason="bf16 needs the bf16 extra (ml_dtypes)")
    saved = {}
    for shard in ("false", "true"):
        Trainer(overrides=[f"log.run_dir={tmp_path / shard}", f"optim.shard={shard}",
                           f"train.amp={amp}", "train.ema_decay=0.9", "train.max_steps=6",
                           "optim.name=adam", "train.bucket_mb=0.001", "model.name=mlp",
                           "model.hidden=[8]", *QUIET], comm=LocalCommunicator()).fit()
        saved[shard] = checkpoint.read(tmp_path / shard / "checkpoints" / "step-000000006.h5")
    for group in (lambda c: c[0], lambda c: c.ema, lambda c: c[1]["buffers"]):
        a, b = group(saved["true"]), group(saved["false"])
        assert sorted(a) == sorted(b)
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert saved["true"][2]["trainer"]["recipe"] == saved["false"][2]["trainer"]["recipe"]


DIGITS_MLP = ["model.name=mlp", "model.hidden=[16]", *QUIET]  # 22 steps an epoch


def epoch_records(run_dir):
    return [(r["epoch"], r["loss"], r["accuracy"]) for r in read_records(run_dir)
            if r.get("scope") == "epoch"]


def test_a_run_stopped_at_an_epoch_boundary_resumes_its_epoch_whole(tmp_path, monkeypatch):
    """A stop signal during an epoch's last step: its checkpoint holds the epoch's totals, so
    the resumed run reports that epoch exactly as an uninterrupted run does (not as an empty
    epoch of NaN metrics, which early stopping and best.h5 would then have watched)."""
    common = [*DIGITS_MLP, "train.epochs=2"]
    Trainer(overrides=[*common, f"log.run_dir={tmp_path / 'straight'}"],
            comm=LocalCommunicator()).fit()
    stopped = Trainer(overrides=[*common, f"log.run_dir={tmp_path / 'stopped'}"],
                      comm=LocalCommunicator())
    votes = stopped.preemption.votes
    monkeypatch.setattr(stopped.preemption, "votes",  # SIGUSR1 seen in step 22 of 22
                        lambda: [1.0, 0.0] if stopped.position.step == 21 else votes())
    with pytest.raises(StoppedBySignal) as stop:
        stopped.fit()
    assert stop.value.code == 75 and epoch_records(tmp_path / "stopped") == []
    Trainer(overrides=[*common, f"log.run_dir={tmp_path / 'stopped'}"], resume="auto",
            comm=LocalCommunicator()).fit()
    assert epoch_records(tmp_path / "stopped") == epoch_records(tmp_path / "straight")
    assert len(epoch_records(tmp_path / "straight")) == 2


def test_an_early_stopped_run_stays_stopped_when_resumed(tmp_path):
    """Early stopping is decided from the saved count: resuming the stopped run (`--resume
    auto` of a requeued job) validates and trains nothing, as for a run that ran its epochs."""
    common = [*DIGITS_MLP, "train.epochs=6", "train.early_stopping_patience=1",
              "train.early_stopping_min_delta=100", f"log.run_dir={tmp_path / 'run'}"]
    first = Trainer(overrides=common, comm=LocalCommunicator()).fit()
    assert (first["epoch"], first["step"]) == (2, 44)  # epoch 1 improved on nothing
    again = Trainer(overrides=common, resume="auto", comm=LocalCommunicator()).fit()
    assert (again["epoch"], again["step"]) == (2, 44) and again["val_loss"] == first["val_loss"]


def test_activations_beyond_the_free_memory_are_refused_before_a_step(tmp_path):
    """Weights that fit but a batch whose activations do not: one ConfigError naming the
    batch, not a process killed for memory (the estimate: the activations the model keeps
    for two samples, scaled to the rank's batch)."""
    with pytest.raises(ConfigError, match=r"a batch of 1400 samples per rank keeps about "
                                          r"[\d.]+ GiB of activations for backward, more than "
                                          r"the [\d.]+ GiB free: lower data.global_batch_size"):
        Trainer(overrides=[f"log.run_dir={tmp_path / 'run'}", "model.name=cnn",
                           "model.channels=[200000]", "model.fc=1",
                           "data.global_batch_size=1400", *QUIET],
                comm=LocalCommunicator()).fit()
    assert not list((tmp_path / "run").glob("checkpoints/*.h5"))
