"""Checkpoints: HDF5 files written by rank 0, atomically, verified by a checksum when read.

A checkpoint holds the group `model` (parameters and buffers under their PyTorch-style
names), the group `optimizer` (its buffers; its step and hyper-parameters in the attribute
`state`), optionally the group `ema` (the averaged weights of train.ema_decay, named as in
`model`), and the attribute `meta`: JSON with the epoch, step, position in the epoch (in
global samples), schedule and trainer state, the resolved config, world size and dist_nn
version. The attribute `checksum` is a SHA-256 over all of it, and a file without one is
refused. Nothing is pickled, so loading a file cannot run code, and what a file claims is
checked against a schema before it is used (a file can lie).

Files are written as `<name>.partial`, fsync'ed and renamed, so a crash never leaves a half
checkpoint under a real name; a write that fails (a full disk, permissions) raises
CheckpointWriteError and leaves the older files as they were. The newest
`keep` step checkpoints are kept, plus `best.h5`; pruning counts only well-formed step files
(regular files named step-<digits>.h5), never a directory or a pipe that looks like one.
"""
import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path

import h5py
import numpy

from . import __version__, fs

STEP_NAME = re.compile(r"^step-(\d+)\.h5$")
BEST = "best.h5"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, truncated, corrupted or incompatible."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (disk full, permissions); older ones are intact."""

    def __init__(self, path, error):
        super().__init__(f"cannot write the checkpoint {path}: {fs.reason(error)}")
        self.filename = str(path)

    def __str__(self):
        return self.args[0]


class Contents(tuple):
    """(model state, optimizer state or None, meta) as read() returns it, and `.ema`: the
    averaged weights ({name: array}) when the checkpoint holds them, else None."""

    def __new__(cls, model, optimizer, meta, ema=None):
        contents = super().__new__(cls, (model, optimizer, meta))
        contents.ema = ema
        return contents


def _digest(model, optimizer_buffers, optimizer_state, meta, ema=None):
    """SHA-256 of the content, the same whether computed before writing or after reading."""
    h = hashlib.sha256()
    for group, arrays in (("model", model), ("optimizer", optimizer_buffers),
                          ("ema", ema or {})):
        for name in sorted(arrays):
            a = numpy.ascontiguousarray(arrays[name])
            h.update(f"{group}/{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
    h.update(optimizer_state.encode())
    h.update(meta.encode())
    return h.hexdigest()


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(path, model_state, optimizer_state=None, meta=None, ema_state=None):
    """Write a checkpoint atomically: {name: array} of the model, the optimizer's
    state_dict() (or None), JSON-able meta and the model's averaged weights (or None). The HDF5 file is built in memory and written
    with plain writes: a full disk is one OSError here, never an HDF5 error inside h5py."""
    path = Path(path)
    optimizer_state = optimizer_state or {"buffers": {}}
    buffers = optimizer_state["buffers"]
    state_json = json.dumps({k: v for k, v in optimizer_state.items() if k != "buffers"})
    meta_json = json.dumps({**(meta or {}), "dist_nn_version": __version__})
    partial = path.with_name(path.name + ".partial")
    with h5py.File(partial, "w", driver="core", backing_store=False) as f:  # in memory
        group = f.create_group("model", track_order=True)  # keep PyTorch's order
        for name, array in model_state.items():
            group[name] = array
        group = f.create_group("optimizer", track_order=True)
        for name, array in buffers.items():
            group[name] = array
        group.attrs["state"] = state_json
        if ema_state is not None:
            group = f.create_group("ema", track_order=True)
            for name, array in ema_state.items():
                group[name] = array
        f.attrs["meta"] = meta_json
        f.attrs["checksum"] = _digest(model_state, buffers, state_json, meta_json, ema_state)
        f.flush()
        image = memoryview(f.id.get_file_image())
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while image:
                image = image[os.write(fd, image):]
        finally:
            os.close(fd)
        _fsync(partial)
        os.replace(partial, path)
        _fsync(path.parent)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise CheckpointWriteError(path, error) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def read(path):
    """Contents: (model state, optimizer state or None, meta) of a checkpoint, and `.ema`;
    CheckpointError when it cannot be read, has no checksum or its checksum does not match."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            if "model" not in f:
                raise CheckpointError(f"{path} has no `model` group: not a dist_nn checkpoint")
            model = _arrays(f["model"], path)
            has_optimizer = "optimizer" in f
            buffers = _arrays(f["optimizer"], path) if has_optimizer else {}
            state_json = f["optimizer"].attrs.get("state", "{}") if has_optimizer else "{}"
            ema = _arrays(f["ema"], path) if "ema" in f else None
            meta_json = f.attrs.get("meta", "{}")
            checksum = f.attrs.get("checksum")
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or damaged "
                              f"({error})") from None
    if checksum is None:
        raise CheckpointError(f"checkpoint {path} has no checksum: it was not written by "
                              "dist_nn, or was altered")
    try:
        if _digest(model, buffers, state_json, meta_json, ema) != checksum:
            raise CheckpointError(f"checkpoint {path} is corrupted: its checksum does not "
                                  "match")
        optimizer = json.loads(state_json)
        meta = json.loads(meta_json)
    except (TypeError, ValueError, AttributeError) as error:  # attributes of another kind
        raise CheckpointError(f"checkpoint {path} is damaged: {error}") from None
    if not isinstance(meta, dict) or (has_optimizer and not isinstance(optimizer, dict)):
        raise CheckpointError(f"checkpoint {path}: meta and optimizer state must be JSON "
                              "objects")
    return Contents(model, {**optimizer, "buffers": buffers} if has_optimizer else None, meta,
                    ema)


def _regular_file(path):
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _arrays(group, path):
    """{name: array} of a group's numeric datasets, each checked to hold the data it declares
    before it is read (a file declaring 10^12 values is refused, not allocated)."""
    arrays = {}
    for name, item in group.items():
        if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "biuf":
            raise CheckpointError(f"checkpoint {path}: {group.name}/{name} is not a numeric "
                                  "array")
        if item.id.get_storage_size() < item.size * item.dtype.itemsize:
            raise CheckpointError(f"checkpoint {path}: {group.name}/{name} declares "
                                  f"{item.shape} but holds less data: truncated or forged")
        arrays[name] = item[()]
    return arrays


def step_checkpoints(directory):
    """[(step, path)] of the well-formed step checkpoints in a directory (regular files named
    step-<digits>.h5), newest first."""
    directory = Path(directory)
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            match = STEP_NAME.match(path.name)
            if match and _regular_file(path):
                found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def all_checkpoints(directory):
    """The step checkpoints (newest first) and best.h5 of a directory."""
    best = Path(directory) / BEST
    return [p for _, p in step_checkpoints(directory)] + ([best] if _regular_file(best) else [])


def newest_valid(directory, warn=print):
    """(path, read(path)) of the newest checkpoint that reads and verifies, or None; every
    newer one that does not is reported through `warn` and skipped."""
    for _, path in step_checkpoints(directory):
        try:
            return path, read(path)
        except CheckpointError as error:
            warn(f"warning: skipping {path}: {error}; falling back to an older checkpoint")
    return None


def save_step(directory, step, model_state, optimizer_state, meta, keep, ema_state=None):
    """Write step-<step>.h5 and delete all but the newest `keep` step checkpoints."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = write(directory / f"step-{step:09d}.h5", model_state, optimizer_state, meta,
                 ema_state)
    for _, old in step_checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)
    return path


def _count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number_or_none(v):
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v))


# what restore() reads from meta: key -> (valid?, what it must be)
META_SCHEMA = {
    "epoch": (_count, "a count"), "step": (_count, "a count"), "samples": (_count, "a count"),
    "stale": (_count, "a count"), "world_size": (lambda v: _count(v) and v > 0, "a count > 0"),
    "best": (_number_or_none, "a number or null"), "watched": (_number_or_none, "a number or null"),
    "schedules": (lambda v: isinstance(v, list) and all(isinstance(d, dict) for d in v),
                  "a list of objects"),
    "plateau": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "guard": (lambda v: isinstance(v, dict), "an object"),
    "config": (lambda v: isinstance(v, str), "a TOML document"),
}


def check_meta(meta, path, epochs=None, max_steps=0):
    """CheckpointError unless meta has every key of META_SCHEMA, each valid, and (given the
    run's train.epochs / train.max_steps) claims a position within the run."""
    for key, (valid, what) in META_SCHEMA.items():
        if key not in meta:
            raise CheckpointError(f"checkpoint {path} lacks the entry {key!r}: not a training "
                                  "checkpoint (for initial weights use model.init_from)")
        if not valid(meta[key]):
            raise CheckpointError(f"checkpoint {path}: {key} must be {what}, got "
                                  f"{str(meta[key])[:60]!r}")
    if epochs is not None and (meta["epoch"] > epochs or
                               (max_steps and meta["step"] > max_steps)):
        raise CheckpointError(
            f"checkpoint {path} is at epoch {meta['epoch']}, step {meta['step']}, beyond this "
            f"run's end (train.epochs = {epochs}, train.max_steps = {max_steps}): raise them "
            "to continue it, or start a new run")


def restore(resume, run_dir, comm, model, opt, schedules, plateau, guard, state, global_batch,
            micro, say, recipe=None, config=None):
    """Load a checkpoint into a run on every rank: `resume` is "auto" (the newest valid
    checkpoint of the run directory; a fresh start when there is none) or a file. The
    position is kept in global samples: with another global batch size (e.g. another world
    size) the run continues at the last whole step within the epoch. `recipe` (an
    optim.StepRecipe) gets its loss scale and averaged weights back. With the run's `config`
    the checkpoint must lie within the run's end, and the keys whose value differs from the
    checkpoint's are said (the values given now take effect). Returns the path used."""
    from .config import ConfigError, changes
    if comm.rank == 0:
        if resume == "auto":
            found = newest_valid(Path(run_dir) / "checkpoints", warn=say)
            chosen = str(found[0]) if found else None
        else:
            chosen = str(resume)
    chosen = comm.bcast_obj(chosen if comm.rank == 0 else None)
    if chosen is None:
        say("no valid checkpoint in the run directory: starting from scratch")
        return None
    try:
        contents = read(chosen)
        model_state, optimizer_state, meta = contents
        check_meta(meta, chosen, *((config.train.epochs, config.train.max_steps)
                                   if config is not None else ()))
        if optimizer_state is None:
            raise CheckpointError(f"{chosen} holds no optimizer state")
        model.load_state_dict(model_state)
        opt.load_state_dict(optimizer_state)
        if recipe is not None:
            recipe.load_state_dict(meta.get("recipe") or {}, contents.ema)
        for schedule, saved in zip(schedules, meta["schedules"]):
            schedule.load_state_dict(saved)
        if plateau is not None and meta["plateau"]:
            plateau.load_state_dict(meta["plateau"])
        guard.load_state_dict(meta["guard"])
    except (CheckpointError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"cannot resume from {chosen}: {error}") from None
    if config is not None:
        differences = changes(meta["config"], config)
        if differences:
            say(f"resuming with a config that differs from the checkpoint's; the values given "
                f"now take effect: {differences}", flush=True)
    state.update({k: meta[k] for k in ("epoch", "step", "best", "watched", "stale")})
    state["batch"] = meta["samples"] // (global_batch * micro) * micro  # micro-batches done
    return chosen
