"""Every value a user can give: each numeric key at the edge of the config's range
(MAX_NUMBER), just beyond it (1e308, NaN, a negative) and at a denormal that vanishes in
float32 either trains (or a guard stops it) or is one ConfigError: never a traceback, an
overflow or a MemoryError."""
import dataclasses
import math

import pytest

from dist_nn import Trainer, config
from dist_nn.config import MAX_NUMBER, sections
from dist_nn.distributed import LocalCommunicator
from dist_nn.monitor.guards import TrainingStopped

BASE = ["log.plots=false", "log.tensorboard=off", "model.hidden=[8]", "model.channels=[4]",
        "model.fc=8", "train.max_steps=2", "augment.enabled=true", "data.cache_mb=0"]


def numeric_keys():
    for name, section in sections(config.Config()).items():
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, list) and value and isinstance(value[0], (int, float)):
                yield f"{name}.{f.name}", "list"
            elif type(value) in (int, float):
                yield f"{name}.{f.name}", type(value).__name__


def edge_values(kind):
    biggest = int(MAX_NUMBER) if kind == "int" else MAX_NUMBER
    values = [biggest, biggest * 10, -1]
    if kind == "float":
        values += [1e308, math.nan, 1e-320]
    return [f"[{v}]" for v in values] if kind == "list" else values


CASES = [(key, value) for key, kind in numeric_keys() for value in edge_values(kind)
         if key != "train.max_steps"]


@pytest.mark.slow
@pytest.mark.parametrize("key, value", CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_a_value_trains_or_is_one_message(tmp_path, key, value):
    text = "nan" if isinstance(value, float) and math.isnan(value) else str(value)
    model = ["model.name=cnn"] if key.split(".")[1] in ("channels", "fc") else \
        ["model.name=mlp"]
    try:
        Trainer(None, [*BASE, *model, f"{key}={text}", f"log.run_dir={tmp_path / 'run'}"],
                comm=LocalCommunicator()).fit()
    except (config.ConfigError, TrainingStopped) as stop:
        assert len(str(stop)) < 400, str(stop)
