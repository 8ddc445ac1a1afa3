"""Forged checkpoint metadata under a valid checksum (written through checkpoint.write): every
field a resume reads is checked against its kind, its range and the rest of the run, and a
violation is one ConfigError (exit 2 from the CLI), never a run that trains on it."""
import copy

import pytest

from dist_nn import Trainer, checkpoint, config
from dist_nn.distributed import LocalCommunicator

QUIET = ["log.plots=false", "log.tensorboard=off", "model.name=mlp", "model.hidden=[8]",
         "optim.momentum=0.9", "train.amp=fp16"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("forged") / "run"
    Trainer(overrides=[f"log.run_dir={run_dir}", "train.max_steps=30", *QUIET],
            comm=LocalCommunicator()).fit()
    return checkpoint.read(checkpoint.step_checkpoints(run_dir / "checkpoints")[0][1])


def trainer(meta):
    return meta["trainer"]


FORGERIES = {
    "a position beyond its epoch": (
        lambda o, m: trainer(m)["position"].update(samples=10**18),
        r"position: 1000000000000000000 samples into epoch 1, beyond its 22 steps"),
    "a renamed optimizer buffer": (
        lambda o, m: o["buffers"].update(renamed=o["buffers"].pop("momentum_buffer")),
        r"optimizer state holds the buffers \['renamed'\]; SGD with its saved "
        r"hyper-parameters keeps \['momentum_buffer'\]"),
    "a missing optimizer buffer": (
        lambda o, m: o["buffers"].pop("momentum_buffer"),
        r"optimizer state holds the buffers \[\]; SGD .* keeps \['momentum_buffer'\] after a step"),
    "a schedule far ahead": (
        lambda o, m: trainer(m)["schedules"][0].update(t=10**30),
        r"schedule 0 is at t = 10{30} but the run is at step 30"),
    "an optimizer far ahead": (
        lambda o, m: o.update(step=10**30),
        r"the optimizer is at step 10{30} but the run is at step 30"),
    "a NaN loss scale": (
        lambda o, m: trainer(m)["recipe"]["scaler"].update(scale=float("nan")),
        r"loss scaler: scale must be a finite number > 0, got 'nan'"),
    "a zero loss scale": (
        lambda o, m: trainer(m)["recipe"]["scaler"].update(scale=0),
        r"loss scaler: scale must be a finite number > 0, got '0'"),
    "a guard holding text": (
        lambda o, m: trainer(m)["guard"].update(average="x"),
        r"explosion guard: average must be a finite number, got 'x'"),
    "a negative early-stopping count": (
        lambda o, m: trainer(m)["early_stopping"].update(stale=-1),
        r"early_stopping: stale must be a count, got '-1'"),
}


@pytest.mark.parametrize("case", list(FORGERIES))
def test_forged_metadata_is_refused_before_a_step(saved, tmp_path, case):
    forge, message = FORGERIES[case]
    model, optimizer, meta = copy.deepcopy(tuple(saved))
    forge(optimizer, meta)
    path = checkpoint.write(tmp_path / "forged.h5", model, optimizer, meta)
    run = Trainer(None, ["train.max_steps=60", f"log.run_dir={tmp_path / 'run'}"], resume=path,
                  comm=LocalCommunicator())
    with pytest.raises(config.ConfigError, match=f"cannot resume from {path}: {message}"):
        run.fit()
    assert not checkpoint.all_checkpoints(tmp_path / "run" / "checkpoints")
