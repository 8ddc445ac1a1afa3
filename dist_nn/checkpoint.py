"""Checkpoints: HDF5 files written by rank 0, atomically, verified by a checksum when read.

A checkpoint holds the group `model` (parameters and buffers under their PyTorch-style
names), the group `optimizer` (its buffers; its step and hyper-parameters in the attribute
`state`), optionally the group `ema` (the averaged weights of train.ema_decay, named as in
`model`), and the attribute `meta`: JSON with the epoch, step, position in the epoch (in
global samples), schedule and trainer state, the resolved config, world size and dist_nn
version. The attribute `checksum` is a SHA-256 over all of it. Nothing is pickled, so
loading a file cannot run code.

Files are written as `<name>.partial`, fsync'ed and renamed, so a crash never leaves a half
checkpoint under a real name; the newest `keep` step checkpoints are kept, plus `best.h5`.
"""
import hashlib
import json
import os
import re
from pathlib import Path

import h5py
import numpy

from . import __version__

STEP_NAME = re.compile(r"^step-(\d+)\.h5$")
BEST = "best.h5"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, truncated, corrupted or incompatible."""


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
    state_dict() (or None), JSON-able meta and the model's averaged weights (or None)."""
    path = Path(path)
    optimizer_state = optimizer_state or {"buffers": {}}
    buffers = optimizer_state["buffers"]
    state_json = json.dumps({k: v for k, v in optimizer_state.items() if k != "buffers"})
    meta_json = json.dumps({**(meta or {}), "dist_nn_version": __version__})
    partial = path.with_name(path.name + ".partial")
    try:
        with h5py.File(partial, "w") as f:
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
            f.attrs["checksum"] = _digest(model_state, buffers, state_json, meta_json,
                                          ema_state)
        _fsync(partial)
        os.replace(partial, path)
        _fsync(path.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def read(path, verify=True):
    """Contents: (model state, optimizer state or None, meta) of a checkpoint, and `.ema`;
    CheckpointError when it cannot be read or its checksum does not match."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            if "model" not in f:
                raise CheckpointError(f"{path} has no `model` group: not a dist_nn checkpoint")
            model = {name: d[()] for name, d in f["model"].items()}
            has_optimizer = "optimizer" in f
            buffers = {name: d[()] for name, d in f["optimizer"].items()} if has_optimizer else {}
            state_json = f["optimizer"].attrs.get("state", "{}") if has_optimizer else "{}"
            ema = {name: d[()] for name, d in f["ema"].items()} if "ema" in f else None
            meta_json = f.attrs.get("meta", "{}")
            checksum = f.attrs.get("checksum")
    except (OSError, KeyError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or damaged "
                              f"({error})") from None
    if verify and checksum is not None and \
            _digest(model, buffers, state_json, meta_json, ema) != checksum:
        raise CheckpointError(f"checkpoint {path} is corrupted: its checksum does not match")
    optimizer = {**json.loads(state_json), "buffers": buffers} if has_optimizer else None
    return Contents(model, optimizer, json.loads(meta_json), ema)


def step_checkpoints(directory):
    """[(step, path)] of the step checkpoints in a directory, newest first."""
    directory = Path(directory)
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            match = STEP_NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


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


def restore(resume, run_dir, comm, model, opt, schedules, plateau, guard, state, global_batch,
            micro, say, recipe=None):
    """Load a checkpoint into a run on every rank: `resume` is "auto" (the newest valid
    checkpoint of the run directory; a fresh start when there is none) or a file. The
    position is kept in global samples: with another global batch size (e.g. another world
    size) the run continues at the last whole step within the epoch. `recipe` (an
    optim.StepRecipe) gets its loss scale and averaged weights back. Returns the path used."""
    from .config import ConfigError
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
        model.load_state_dict(model_state)
        opt.load_state_dict(optimizer_state)
        if recipe is not None:
            recipe.load_state_dict(meta.get("recipe") or {}, contents.ema)
    except (CheckpointError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"cannot resume from {chosen}: {error}") from None
    for schedule, saved in zip(schedules, meta["schedules"]):
        schedule.load_state_dict(saved)
    if plateau is not None and meta["plateau"]:
        plateau.load_state_dict(meta["plateau"])
    guard.load_state_dict(meta["guard"])
    state.update({k: meta[k] for k in ("epoch", "step", "best", "watched", "stale")})
    state["batch"] = meta["samples"] // (global_batch * micro) * micro  # micro-batches done
    return chosen
