"""The typed configuration: files, overrides, validation (every key, the rules across keys),
round trip, the generated reference page."""
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from dist_nn import config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nname = "mlp"\nhidden = [64]\n[optim]\nlr = 0.2\n')
    c = config.load(path, ["optim.lr=0.3", "model.freeze=[\"1\"]", "log.run_dir=runs/a"])
    assert (c.model.name, c.model.hidden, c.optim.lr, c.model.freeze) == ("mlp", [64], 0.3, ["1"])
    assert c.log.run_dir == "runs/a" and c.data.path == "digits"  # unquoted strings work too


def test_round_trip_through_toml():
    c = config.load(None, ["model.channels=[8, 16]", "train.dtype=float64", "optim.betas=[0.8, 0.9]"])
    assert config.loads(config.to_toml(c)) == c


@pytest.mark.parametrize("overrides, message", [
    (["model.nme=cnn"], r"unknown key model.nme; \[model\] has name, options, dropout"),
    (["model.options=3"], r"model.options must be a table like \{width = 64\}, got 3"),
    (["modle.name=cnn"], r"unknown section \[modle\]; sections are model, data"),
    (["optim.lr=fast"], "optim.lr must be a number, got 'fast'"),
    (["train.epochs=2.5"], "train.epochs must be an integer, got 2.5"),
    (["model.sync_bn=yes"], "model.sync_bn must be true or false, got 'yes'"),
    (["model.hidden=64"], r"model.hidden must be a list like \[1, 2\], got 64"),
    (["model.name=vgg"], "model.name must be one of mlp, cnn, resnet20"),
    (["optim.lr=-1"], "optim.lr must be >= 0, got -1"),
    (["train.epochs=0", "train.max_steps=100"], "train.epochs must be >= 1, got 0"),
    (["model.dropout=1.0"], r"model.dropout must be in \[0, 1\)"),
    (["lr=0.1"], "must look like section.key=value"),
    (["data.global_batch_size=0"], "data.global_batch_size must be >= 1, got 0"),
    (["train.explosion_factor=1"], r"train.explosion_factor must be 0 \(off\) or > 1, got 1.0"),
    (["optim.betas=[0.9, 1.0]"], r"optim.betas must be a list of 2 numbers \(in \[0, 1\)\)"),
    (["schedule.milestones=[20, 10]"], "in ascending order"),
])
def test_bad_values_name_what_is_valid(overrides, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(None, overrides)


def test_builder_options_from_toml_and_overrides_round_trip(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nname = "mymodels:wide"\n[model.options]\nwidth = 64\n')
    loaded = config.load(path, ["model.options.depth=3", 'model.options.act="gelu"'])
    assert loaded.model.name == "mymodels:wide"
    assert loaded.model.options == {"width": 64, "depth": 3, "act": "gelu"}
    assert config.loads(config.to_toml(loaded)).model.options == loaded.model.options
    assert config.Config().model.options == {}  # not shared between configs


def every_key():
    for name, section in config.sections(config.Config()).items():
        for f in fields(section):
            yield f"{name}.{f.name}", f


@pytest.mark.parametrize("key, spec", list(every_key()), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_every_key_declares_its_valid_values_and_refuses_a_bad_one(key, spec):
    """Keys added later are covered too: each needs choices or a range check (booleans
    have their type), and a value outside them is refused, naming the key."""
    default = getattr(getattr(config.Config(), key.split(".")[0]), spec.name)
    choices, check = spec.metadata.get("choices"), spec.metadata.get("check")
    assert choices or check or isinstance(default, bool), \
        f"{key} declares no valid values: give option() choices= or check="
    bad = ("no-such-choice" if choices else "yes" if isinstance(default, bool) else check.bad)
    with pytest.raises(config.ConfigError, match=re.escape(key)):
        config.load(None, [f"{key}={config._literal(bad)}"])
    if check is not None and not isinstance(bad, str):  # and the wrong type, too
        with pytest.raises(config.ConfigError, match=re.escape(key)):
            config.load(None, [f"{key}=\"text\""] if not isinstance(default, str) else
                        [f"{key}=1"])


def test_a_config_built_in_python_is_validated_too():
    c = config.Config()
    c.augment.flip = 2
    with pytest.raises(config.ConfigError, match=r"augment.flip must be in \[0, 1\], got 2.0"):
        config.validate(c)
    c.augment.flip, c.train.seed = 0.5, "1"
    with pytest.raises(config.ConfigError, match="train.seed must be an integer, got '1'"):
        config.validate(c)


def test_the_world_size_needs_a_sample_per_rank():
    c = config.load(None, ["data.global_batch_size=3"])
    config.check_world_size(c, 3)
    with pytest.raises(config.ConfigError, match="cannot give each of 4 ranks a sample"):
        config.check_world_size(c, 4)


def test_bad_files(tmp_path):
    (tmp_path / "latin1.toml").write_bytes('[log]\nrun_dir = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(config.ConfigError, match="latin1.toml is not UTF-8 text"):
        config.load(tmp_path / "latin1.toml")
    with pytest.raises(config.ConfigError, match="cannot read config file"):
        config.load(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[model\nname=")
    with pytest.raises(config.ConfigError, match="is not valid TOML"):
        config.load(tmp_path / "bad.toml")
    (tmp_path / "flat.toml").write_text("lr = 0.1\n")
    with pytest.raises(config.ConfigError, match="must be a \\[section\\]"):
        config.load(tmp_path / "flat.toml")


def test_without_a_val_split_training_metrics_are_watched_with_one_notice():
    c = config.load(None, ["schedule.name=plateau", "data.path=mine.h5"])
    assert config.fall_back_to_train_metrics(c, has_val=True) is None
    assert c.checkpoint.best_metric == "val_accuracy"
    notice = config.fall_back_to_train_metrics(c, has_val=False)
    assert notice == ("notice: mine.h5 has no /val split: watching training metrics instead "
                      "(checkpoint.best_metric = train_accuracy, train.early_stopping_metric = "
                      "train_loss, schedule.plateau_metric = train_loss)")
    assert (c.checkpoint.best_metric, c.train.early_stopping_metric,
            c.schedule.plateau_metric) == ("train_accuracy", "train_loss", "train_loss")
    assert config.fall_back_to_train_metrics(c, has_val=False) is None  # nothing left to change
    c = config.load(None, ["checkpoint.best_metric=train_loss"])  # plateau_metric not in use
    assert config.fall_back_to_train_metrics(c, has_val=False).endswith(
        "(train.early_stopping_metric = train_loss)")
    assert c.schedule.plateau_metric == "val_loss"


def test_the_reference_page_is_generated_from_the_config():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == config.reference(), \
        "docs/configuration.md is stale: python -m dist_nn.config --reference > " \
        "docs/configuration.md"
    for name, spec in every_key():
        assert f"| `{name}` |" in page
    assert all(" ".join(rule.__doc__.split()) in page for rule in config.RULES)


# one configuration that breaks each rule across keys, with the message it gets
BROKEN_RULES = [
    (["schedule.name=plateau", "schedule.warmup_epochs=1"],
     "schedule.warmup_epochs does not combine with the plateau schedule"),
    (["schedule.momentum_start=0.5", "optim.name=adam"],
     "schedule.momentum_start needs an optimizer with momentum (sgd or rmsprop), not "
     "optim.name = 'adam'"),
    (["optim.nesterov=true", "optim.momentum=0"], "optim.nesterov needs optim.name = \"sgd\" and "
     "optim.momentum > 0"),
    (["train.comm=nccl", "train.device=cpu"], "train.comm = \"nccl\" needs GPUs"),
    (["train.grad_compression=powersgd", "optim.shard=true"],
     "train.grad_compression = \"powersgd\" does not combine with optim.shard"),
    (["train.grad_compression=powersgd", "train.amp=fp16"],
     "train.grad_compression = \"powersgd\" does not combine with train.amp = \"fp16\""),
    (["optim.eps=1e-320"], "optim.eps = 1e-320 vanishes in train.dtype = float32 (its "
                           "smallest normal number is 1.18e-38)"),
    (["--resume", "auto"], "--resume auto needs log.run_dir=... (the run to resume)"),
]


def test_every_rule_across_keys_has_a_case_here():
    assert len(BROKEN_RULES) == len(config.RULES)


@pytest.mark.parametrize("argv, message", BROKEN_RULES, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else "")
def test_the_config_command_refuses_exactly_what_training_refuses(argv, message, tmp_path):
    """`python -m dist_nn.config` and `python -m dist_nn.train` give the same one message and
    exit 2 for a configuration that breaks a rule, before anything is trained or written."""
    said = {}
    for command in ("dist_nn.config", "dist_nn.train"):
        done = subprocess.run([sys.executable, "-m", command, *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        said[command] = done.stderr.strip()
    assert said["dist_nn.config"] == said["dist_nn.train"]
    assert said["dist_nn.train"].startswith(f"error: {message}")
    assert "\n" not in said["dist_nn.train"]
    assert not (tmp_path / "runs").exists()


def test_a_valid_command_line_is_printed_as_toml():
    done = subprocess.run([sys.executable, "-m", "dist_nn.config", "optim.lr=0.2",
                           "--resume", "auto", "log.run_dir=runs/a"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and config.loads(done.stdout).optim.lr == 0.2
