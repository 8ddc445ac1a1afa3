"""Checkpoints: HDF5 files written by rank 0, atomically, verified by a checksum when read.

A checkpoint holds the group `model` (parameters and buffers under their PyTorch-style
names), the group `optimizer` (its buffers; its step and hyper-parameters in the attribute
`state`), optionally the group `ema` (the averaged weights of train.ema_decay, named as in
`model`) and the group `compression` (gradient compression's state: PowerSGD's), and the attribute `meta`: JSON that the writer gives (a training checkpoint's:
TRAINING_META, the trainer's parts each under their own name), plus the format and the
dist_nn version. The attribute `checksum` is a SHA-256 over all of it, and a file without one
is refused. Nothing is pickled, so loading a file cannot run code, and what a file claims is
checked before it is used (a file can lie): the arrays here, the meta's top level by
check_meta, each part's state by the part as it loads it (dist_nn.saved). This module only
handles files; what a checkpoint holds is defined by its owners (Trainer.state_dict()).

Files are written as `<name>.partial`, fsync'ed and renamed, so a crash never leaves a half
checkpoint under a real name; a write that fails (a full disk, permissions) raises
CheckpointWriteError and leaves the older files as they were. The newest
`keep` step checkpoints are kept, plus `best.h5`; pruning counts only well-formed step files
(regular files named step-<digits>.h5), never a directory or a pipe that looks like one.
"""
import hashlib
import json
import os
import re
import stat
from pathlib import Path

import h5py
import numpy

from . import __version__, fs, saved

STEP_NAME = re.compile(r"^step-(\d+)\.h5$")
BEST = "best.h5"
FORMAT = 2  # the layout of `meta` (1: before the Trainer's parts saved themselves)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, truncated, corrupted or incompatible."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (disk full, permissions); older ones are intact."""

    def __init__(self, path, error):
        super().__init__(f"cannot write the checkpoint {path}: {fs.reason(error)}")
        self.filename = str(path)

    def __str__(self):
        return self.args[0]


OPTIONAL_GROUPS = ("ema", "compression")


class Contents(tuple):
    """(model state, optimizer state or None, meta) as read() returns it, and `.ema` and
    `.compression`: the averaged weights and gradient compression's state ({name: array})
    when the checkpoint holds them, else None."""

    def __new__(cls, model, optimizer, meta, ema=None, compression=None):
        contents = super().__new__(cls, (model, optimizer, meta))
        contents.ema, contents.compression = ema, compression
        return contents


def _digest(model, optimizer_buffers, optimizer_state, meta, ema=None, compression=None):
    """SHA-256 of the content, the same whether computed before writing or after reading
    (an absent optional group adds nothing: older files keep their checksum)."""
    h = hashlib.sha256()
    for group, arrays in (("model", model), ("optimizer", optimizer_buffers),
                          ("ema", ema or {}), ("compression", compression or {})):
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


def write(path, model_state, optimizer_state=None, meta=None, ema_state=None,
          compression_state=None):
    """Write a checkpoint atomically: {name: array} of the model, the optimizer's
    state_dict() (or None), JSON-able meta, the model's averaged weights and gradient
    compression's arrays (or None). The HDF5 file is built in memory and written with plain
    writes: a full disk is one OSError here, never an HDF5 error inside h5py."""
    path = Path(path)
    optimizer_state = optimizer_state or {"buffers": {}}
    buffers = optimizer_state["buffers"]
    state_json = json.dumps({k: v for k, v in optimizer_state.items() if k != "buffers"})
    meta_json = json.dumps({**(meta or {}), "format": FORMAT,
                            "dist_nn_version": __version__})
    partial = path.with_name(path.name + ".partial")
    with h5py.File(partial, "w", driver="core", backing_store=False) as f:  # in memory
        group = f.create_group("model", track_order=True)  # keep PyTorch's order
        for name, array in model_state.items():
            group[name] = array
        group = f.create_group("optimizer", track_order=True)
        for name, array in buffers.items():
            group[name] = array
        group.attrs["state"] = state_json
        for name, arrays in zip(OPTIONAL_GROUPS, (ema_state, compression_state)):
            if arrays:
                group = f.create_group(name, track_order=True)
                for key, array in arrays.items():
                    group[key] = array
        f.attrs["meta"] = meta_json
        f.attrs["checksum"] = _digest(model_state, buffers, state_json, meta_json, ema_state,
                                      compression_state)
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
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    if not stat.S_ISREG(mode):  # a FIFO would block open() forever
        raise CheckpointError(f"checkpoint {path} is not a regular file (a directory, FIFO "
                              "or device)")
    try:
        with h5py.File(path, "r") as f:
            if "model" not in f:
                raise CheckpointError(f"{path} has no `model` group: not a dist_nn checkpoint")
            for name in f:  # a link would read another file's arrays
                if not isinstance(f.get(name, getlink=True), h5py.HardLink):
                    raise CheckpointError(f"checkpoint {path}: /{name} is a link: a "
                                          "checkpoint holds its arrays itself")
            model = _arrays(f["model"], path)
            has_optimizer = "optimizer" in f
            buffers = _arrays(f["optimizer"], path) if has_optimizer else {}
            state_json = f["optimizer"].attrs.get("state", "{}") if has_optimizer else "{}"
            ema, compression = (_arrays(f[name], path) if name in f else None
                                for name in OPTIONAL_GROUPS)
            meta_json = f.attrs.get("meta", "{}")
            checksum = f.attrs.get("checksum")
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or damaged "
                              f"({error})") from None
    if checksum is None:
        raise CheckpointError(f"checkpoint {path} has no checksum: it was not written by "
                              "dist_nn, or was altered")
    try:
        if _digest(model, buffers, state_json, meta_json, ema, compression) != checksum:
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
                    ema, compression)


def run_id(path):
    """The run id recorded in the checkpoint at `path` (its meta only, unverified: the owner
    of a directory, not data to train on), or None when it has none or cannot be read."""
    try:
        with h5py.File(path, "r") as f:
            found = json.loads(f.attrs.get("meta", "{}")).get("run_id")
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def _regular_file(path):
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _arrays(group, path):
    """{name: array} of a group's numeric datasets, each checked to hold the data it declares
    before it is read (a file declaring 10^12 values is refused, not allocated)."""
    arrays = {}
    for name in group:
        if not isinstance(group.get(name, getlink=True), h5py.HardLink):
            raise CheckpointError(f"checkpoint {path}: {group.name}/{name} is a link: a "
                                  "checkpoint holds its arrays itself")
        item = group[name]
        if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "biuf":
            raise CheckpointError(f"checkpoint {path}: {group.name}/{name} is not a numeric "
                                  "array")
        if item.external or item.is_virtual:  # its bytes would come from another file
            raise CheckpointError(f"checkpoint {path}: {group.name}/{name} keeps its data "
                                  "outside the file")
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


def lies_in(path, directory):
    """Whether the checkpoint at `path` lies in `directory` (links resolved)."""
    return Path(path).resolve().parent == Path(directory).resolve()


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


def save_step(directory, step, model_state, optimizer_state, meta, keep, ema_state=None,
              compression_state=None, warn=print):
    """Write step-<step>.h5 and delete all but the newest `keep` step checkpoints. A write
    that fails raises CheckpointWriteError; an old file that cannot be deleted is only
    said through `warn` (the new checkpoint is on disk all the same)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = write(directory / f"step-{step:09d}.h5", model_state, optimizer_state, meta,
                 ema_state, compression_state)
    for _, old in step_checkpoints(directory)[keep:]:
        try:
            old.unlink(missing_ok=True)
        except OSError as error:
            warn(f"warning: could not delete the old checkpoint {old} ({fs.reason(error)}); "
                 "it stays", flush=True)
    return path


# A training checkpoint's meta: every part of the run saves its own state under "trainer"
# (Trainer.state_dict()); the file adds "format" and "dist_nn_version" when written.
TRAINING_META = {"trainer": saved.OBJECT, "config": saved.TEXT,
                 "world_size": (lambda v: saved.COUNT[0](v) and v > 0, "a count > 0"),
                 "model_given": saved.FLAG}


def check_meta(meta, path):
    """CheckpointError unless `meta` is a training checkpoint's of this FORMAT, with the
    entries of TRAINING_META (each part then checks its own state as it loads it)."""
    written = meta.get("format", 1)
    if written != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {written!r} (written by dist_nn "
            f"{meta.get('dist_nn_version', '?')}); this dist_nn {__version__} reads format "
            f"{FORMAT}: continue that run with the dist_nn that wrote it, or start a new run "
            "from its weights with model.init_from")
    if "trainer" not in meta:
        raise CheckpointError(f"checkpoint {path} lacks the entry 'trainer': not a training "
                              "checkpoint (for initial weights use model.init_from)")
    try:
        saved.checked(meta, "meta", **TRAINING_META)
    except ValueError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None
