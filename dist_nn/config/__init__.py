"""The run configuration: typed sections (sections.py), read from TOML, changed by dotted
`section.key=value` overrides, validated (every key's valid values, then the rules across
keys, all here), saved as TOML.

`python -m dist_nn.config` checks a command line exactly as `dist_nn.train` does;
`python -m dist_nn.config --reference` writes docs/configuration.md.
"""
import copy
import dataclasses
import json
import math
import sys
from dataclasses import fields

import numpy

from .sections import (METRICS, MODELS, OPTIMIZERS, SCHEDULES, WITH_MOMENTUM, Augment,
                       Checkpoint, Config, Data, Log, Model, Optim, Schedule, Train,
                       lower_is_better)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["METRICS", "MODELS", "OPTIMIZERS", "RULES", "SCHEDULES", "Augment", "Checkpoint",
           "Config", "ConfigError", "Data", "Log", "Model", "Optim", "Schedule", "Train",
           "changes", "check_world_size", "fall_back_to_train_metrics", "load", "loads",
           "lower_is_better", "reference", "sections", "to_toml", "validate"]


class ConfigError(ValueError):
    """A configuration that cannot run: unknown key, wrong type, value out of range, keys
    that contradict each other."""


def sections(config):
    """{name: section} of a Config, in file order."""
    return {f.name: getattr(config, f.name) for f in fields(config)}


# Every number a run's config holds lies within +-MAX_NUMBER (the largest any key needs:
# steps, samples, MiB), so no value overflows what it sizes (1e308 epochs of warmup).
MAX_NUMBER = 1e9


def shown(value, limit=80):
    """A value as a message shows it: its repr, cut to `limit` characters (a name of ten
    million characters gives a short message)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _too_large(value):
    """Whether a number, or a number inside a list, lies beyond +-MAX_NUMBER."""
    if isinstance(value, list):
        return any(_too_large(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        abs(value) > MAX_NUMBER


def _typed(section, key, value, spec):
    """value converted to the field's type, or ConfigError naming what was expected."""
    kind = type(spec.default if spec.default is not dataclasses.MISSING else
                spec.default_factory())
    where = f"{section}.{key}"
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {shown(value)}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {shown(value)}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            raise ConfigError(f"{where} must be a number, got {shown(value)}")
        value = float(value)
    elif kind is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list like [1, 2], got {shown(value)}")
    elif kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table like {{width = 64}}, got "
                              f"{shown(value)}")
    elif not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {shown(value)}")
    if _too_large(value):
        raise ConfigError(f"{where} = {shown(value)} is beyond +-{MAX_NUMBER:g}, the range of "
                          "every number in a config")
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where} = {shown(value)} is not one of {', '.join(choices)}")
    return value


def _set(config, section, key, value):
    parts = sections(config)
    if section not in parts:
        raise ConfigError(f"unknown section [{shown(section)[1:-1]}]; sections are "
                          f"{', '.join(parts)}")
    specs = {f.name: f for f in fields(parts[section])}
    table, dot, entry = key.partition(".")
    if dot and table in specs and isinstance(getattr(parts[section], table), dict):
        getattr(parts[section], table)[entry] = value  # model.options.width=64
        return
    if key not in specs:
        raise ConfigError(f"unknown key {section}.{shown(key)[1:-1]}; [{section}] has "
                          f"{', '.join(specs)}")
    setattr(parts[section], key, _typed(section, key, value, specs[key]))


def _parse_value(text):
    """A TOML value (number, bool, list, quoted string), else the text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise ConfigError(f"value {shown(text)} is nested too deeply") from None


def load(path=None, overrides=(), resume=None, base=None):
    """Defaults (or `base`), then the TOML file at `path`, then `section.key=value`
    overrides, validated (`resume`: the run's --resume, which some rules involve)."""
    return loads(read_text(path), overrides, source=path or "config", resume=resume, base=base)


def read_text(path):
    """The text of the TOML file at `path` ("" for None); ConfigError when unreadable."""
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {error.start}: "
                          f"{error.object[error.start:error.start + 1]!r})") from None


def loads(text, overrides=(), source="config", resume=None, base=None):
    """load() of a TOML document given as text (e.g. the config saved in a checkpoint)."""
    config = compose(text, overrides, source, base)
    validate(config, resume)
    return config


def compose(text, overrides=(), source="config", base=None):
    """`base` (a Config, else the defaults) with the values of the TOML `text` and the
    overrides set on top, each checked alone; the rules across keys are validate()'s."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source} is not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{source}: its values are nested too deeply") from None
    config = copy.deepcopy(base) if base is not None else Config()
    for section, values in document.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: top-level key {shown(section)} must be a [section]")
        for key, value in values.items():
            _set(config, section, key, value)
    for item in overrides:
        name, equals, text = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not equals or not dot:
            raise ConfigError(f"override {shown(item)} must look like section.key=value")
        _set(config, section, key, _parse_value(text.strip()))
    return config


RULES = []  # the checks across keys, in the order validate() applies them


def rule(check):
    """Register a check across keys: `check(config, resume)` returns the error message for a
    configuration that breaks it, else None; its docstring states the rule (the reference
    page lists them)."""
    RULES.append(check)
    return check


@rule
def _plateau_without_warmup(c, resume):
    """`schedule.name = "plateau"` takes no `schedule.warmup_epochs` (the plateau schedule
    follows a metric; a warmup is a function of the step)."""
    if c.schedule.name == "plateau" and c.schedule.warmup_epochs:
        return "schedule.warmup_epochs does not combine with the plateau schedule"


@rule
def _momentum_ramp_needs_momentum(c, resume):
    """`schedule.momentum_start` needs an optimizer with a momentum hyper-parameter."""
    if c.schedule.momentum_start and c.optim.name not in WITH_MOMENTUM:
        return (f"schedule.momentum_start needs an optimizer with momentum "
                f"({' or '.join(WITH_MOMENTUM)}), not optim.name = {c.optim.name!r}")


@rule
def _nesterov_needs_momentum(c, resume):
    """`optim.nesterov` needs `optim.name = "sgd"` and `optim.momentum` > 0."""
    if c.optim.nesterov and (c.optim.name != "sgd" or c.optim.momentum == 0):
        return ("optim.nesterov needs optim.name = \"sgd\" and optim.momentum > 0, got "
                f"optim.name = {c.optim.name!r}, optim.momentum = {c.optim.momentum!r}")


@rule
def _nccl_needs_a_gpu(c, resume):
    """`train.comm = "nccl"` needs `train.device` "gpu" or "auto" (NCCL moves device arrays)."""
    if c.train.comm == "nccl" and c.train.device == "cpu":
        return ("train.comm = \"nccl\" needs GPUs: set train.device = \"gpu\" or use "
                "train.comm = \"mpi\"")


@rule
def _powersgd_without_zero(c, resume):
    """`train.grad_compression = "powersgd"` does not combine with `optim.shard` (ZeRO-1
    reduce-scatters the buckets; PowerSGD allreduces low-rank factors)."""
    if c.train.grad_compression == "powersgd" and c.optim.shard:
        return ("train.grad_compression = \"powersgd\" does not combine with optim.shard "
                "(ZeRO-1): use fp16 or bf16 compression with it")


@rule
def _powersgd_without_loss_scaling(c, resume):
    """`train.grad_compression = "powersgd"` does not combine with `train.amp = "fp16"` (a
    step skipped for overflow would leave Inf in its error feedback; bf16 needs no loss
    scale)."""
    if c.train.grad_compression == "powersgd" and c.train.amp == "fp16":
        return ("train.grad_compression = \"powersgd\" does not combine with train.amp = "
                "\"fp16\" (an overflow step would poison its error feedback): use train.amp "
                "= \"bf16\"")


@rule
def _eps_holds_in_the_training_dtype(c, resume):
    """`optim.eps` is a normal number of `train.dtype` (float32's smallest is 1.2e-38): one
    that rounds to 0 or a denormal divides by (almost) nothing."""
    tiny = float(numpy.finfo(c.train.dtype).tiny)
    if c.optim.eps < tiny:
        return (f"optim.eps = {c.optim.eps!r} vanishes in train.dtype = {c.train.dtype} "
                f"(its smallest normal number is {tiny:.3g}): raise it (1e-8 is usual)")


@rule
def _resume_auto_needs_a_run_dir(c, resume):
    """`--resume auto` needs `log.run_dir` (the run to resume)."""
    if resume == "auto" and not c.log.run_dir:
        return "--resume auto needs log.run_dir=... (the run to resume)"


def validate(config, resume=None):
    """Every key's declared valid values, then every rule across keys (RULES); `resume` is the
    run's --resume (None, "auto" or a path). ConfigError names the first problem."""
    for name, section in sections(config).items():
        for f in fields(section):  # typed again: a Config may also be built in Python
            value = _typed(name, f.name, getattr(section, f.name), f)
            setattr(section, f.name, value)
            check = f.metadata.get("check")
            if check is not None and not check.accepts(value):
                raise ConfigError(f"{name}.{f.name} must be {check.says}, got {shown(value)}")
    for check in RULES:
        message = check(config, resume)
        if message:
            raise ConfigError(message)


def check_world_size(config, world_size):
    """The checks that need the number of ranks: each rank needs a sample of every batch."""
    if config.data.batch_size == 0 and config.data.global_batch_size < world_size:
        raise ConfigError(f"data.global_batch_size = {config.data.global_batch_size} cannot "
                          f"give each of {world_size} ranks a sample: raise it, or use fewer "
                          "ranks")


def fall_back_to_train_metrics(config, has_val):
    """Without a /val split, the watched val_* metrics (checkpoint.best_metric,
    train.early_stopping_metric, schedule.plateau_metric with the plateau schedule) become
    their train_* twins, in place. Returns one notice naming what changed, or None."""
    if has_val:
        return None
    watched = [(config.checkpoint, "checkpoint.best_metric"),
               (config.train, "train.early_stopping_metric")]
    if config.schedule.name == "plateau":
        watched.append((config.schedule, "schedule.plateau_metric"))
    changed = []
    for section, name in watched:
        key = name.partition(".")[2]
        metric = getattr(section, key)
        if metric.startswith("val_"):
            setattr(section, key, "train_" + metric[len("val_"):])
            changed.append(f"{name} = {getattr(section, key)}")
    if not changed:
        return None
    return (f"notice: {config.data.path} has no /val split: watching training metrics "
            f"instead ({', '.join(changed)})")


def changes(saved, config):
    """`key: old -> new` for each key whose value in the TOML document `saved` (e.g. a
    checkpoint's config) differs from `config`'s, joined by "; " ("" when none differ)."""
    def flat(document):
        return {f"{name}.{key}": value for name, section in document.items()
                if isinstance(section, dict) for key, value in section.items()}
    try:
        old = flat(tomllib.loads(saved))
    except tomllib.TOMLDecodeError:
        return "(the checkpoint's config is not readable TOML)"
    new = flat(tomllib.loads(to_toml(config)))
    show = lambda d, k: _literal(d[k]) if k in d else "(absent)"  # noqa: E731
    return "; ".join(f"{k}: {show(old, k)} -> {show(new, k)}" for k in sorted({*old, *new},
                     key=list({**new, **old}).index) if old.get(k) != new.get(k))


def _literal(value):
    """A TOML literal of a config value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # JSON's escapes are TOML's (control characters included)
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)} = {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def to_toml(config):
    """The resolved configuration as a TOML document (loads back to the same Config)."""
    lines = []
    for name, section in sections(config).items():
        lines.append(f"[{name}]")
        lines += [f"{f.name} = {_literal(getattr(section, f.name))}" for f in fields(section)]
        lines.append("")
    return "\n".join(lines)


TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list",
         dict: "table"}


def reference():
    """docs/configuration.md: every key with its type, default, valid values and meaning,
    section by section, and the rules across keys."""
    page = ["# Configuration reference", "",
            "<!-- Generated by `python -m dist_nn.config --reference > docs/configuration.md`"
            " from dist_nn/config/sections.py; tests/test_config.py fails when it is stale. -->",
            "",
            "A run's configuration is the defaults below, then `--config FILE.toml` (a TOML "
            "file of `[section]` tables), then `section.key=value` overrides on the command "
            "line (values in TOML syntax: `optim.lr=0.1`, `'model.channels=[16, 32]'`, "
            "`model.options.width=64`). The run directory's `config.toml` holds the resolved "
            "configuration. Unknown sections and keys, wrong types and values outside their "
            "valid range are refused with one message naming the valid choices (exit 2); "
            f"every number a config holds lies within +-{MAX_NUMBER:g}, and paths within the "
            "file system's limits; "
            "`python -m dist_nn.config [--config FILE] [--resume auto|PATH] KEY=VALUE ...` "
            "checks a configuration exactly as `python -m dist_nn.train` does, without "
            "training.", ""]
    for name, section in sections(Config()).items():
        page += [f"## [{name}]", "", "| key | type | default | valid values | meaning |",
                 "| --- | --- | --- | --- | --- |"]
        for f in fields(section):
            choices, check = f.metadata.get("choices"), f.metadata.get("check")
            valid = ("one of " + ", ".join(f"`{c}`" for c in choices) if choices else
                     check.says if check else "true or false")
            value = getattr(section, f.name)
            page.append(f"| `{name}.{f.name}` | {TYPES[type(value)]} | `{_literal(value)}` | "
                        f"{valid.replace('|', '/')} | {f.metadata['help'].replace('|', '/')} |")
        page.append("")
    page += ["## Rules across keys", "",
             "Checked after every key's own range, in this order (the first broken rule is "
             "the message):", ""]
    page += [f"- {' '.join(check.__doc__.split())}" for check in RULES]
    return "\n".join(page) + "\n"
