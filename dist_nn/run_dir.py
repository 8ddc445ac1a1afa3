"""The run directory: one place decides who may write into it.

A run directory belongs to one run. Rank 0 claims it for the run's life with an exclusive
lock (`flock` on `run.lock`, released by the kernel when the process ends, however it ends),
so a second live run into it is refused; a fresh run into a directory that holds another
run's checkpoints is refused unless it resumes them (`--resume`) or `log.overwrite=true`
deletes them. The decision is rank 0's and every rank raises the same ConfigError.
"""
import datetime
import errno
import fcntl
import os
import socket
from pathlib import Path

from . import checkpoint, config as configuration, fs
from .config import ConfigError

LOCK = "run.lock"
PSEUDO_FILE_SYSTEMS = ("/proc", "/sys", "/dev")  # writing there changes the system
RUN_RECORDS = ("metrics.jsonl", "metrics.csv")  # another run's records (log.overwrite)


class RunDir:
    """A claimed run directory: `path`, `checkpoints`. On rank 0 it holds the lock until
    release(), or until it is garbage: keep it for the run's life."""

    def __init__(self, path, lock=None):
        self.path, self._lock = Path(path), lock
        self.checkpoints = self.path / "checkpoints"

    def release(self):
        if self._lock is not None:
            self._lock.close()  # closing the descriptor drops the flock
            self._lock = None


def claim(config, comm, resume=None, warn=print):
    """Create (or take) the run directory of `config` on rank 0 and lock it; refuse another
    run's directory. Returns a RunDir on every rank, or raises ConfigError on every rank."""
    run, error = None, None
    if comm.rank == 0:
        try:
            run = _claim(config, resume, warn)
        except ConfigError as failure:
            error = str(failure)
    error = comm.bcast_obj(error)
    if error is not None:
        raise ConfigError(error)
    path = comm.bcast_obj(str(run.path) if comm.rank == 0 else None)
    return run if comm.rank == 0 else RunDir(path)


def _claim(config, resume, warn):
    path = Path(config.log.run_dir or
                Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f"))
    real = os.path.realpath(path)
    if any(real == top or real.startswith(top + "/") for top in PSEUDO_FILE_SYSTEMS):
        raise ConfigError(f"log.run_dir {path} is on a system file system ({real}): choose a "
                          "directory for the run's files")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"log.run_dir {path} is a file, not a directory")
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        lock = open(path / LOCK, "a+b", buffering=0)  # unbuffered: nothing left to flush
    except OSError as error:
        raise ConfigError(f"cannot write into the run directory {path}: "
                          f"{fs.reason(error)}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        lock.seek(0)
        holder = lock.read().decode(errors="replace").strip() or "another process"
        lock.close()
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ConfigError(f"the run directory {path} is in use by a live run ({holder}): "
                              "wait for it to end, or choose another log.run_dir") from None
        raise ConfigError(f"cannot lock the run directory {path}: {error.strerror}") from None
    run = RunDir(path, lock)
    try:
        _note_holder(lock)
        _check_ownership(config, run, resume, warn)
    except BaseException:
        run.release()
        raise
    _save_config(config, path, warn)
    return run


def _note_holder(lock):
    """Who holds the lock, for the message a second run gets (best effort: a full disk)."""
    try:
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                   f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}\n".encode())
    except OSError:
        pass


def _check_ownership(config, run, resume, warn):
    """A fresh run takes no other run's checkpoints, unless log.overwrite deletes them."""
    if resume:
        return
    found = checkpoint.all_checkpoints(run.checkpoints)
    if not found:
        return
    names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
    if not config.log.overwrite:
        raise ConfigError(f"the run directory {run.path} holds another run's checkpoints "
                          f"({names}): continue it with --resume auto, start afresh there "
                          "with log.overwrite=true (deletes them), or choose another "
                          "log.run_dir")
    try:
        for old in found + [run.path / name for name in RUN_RECORDS]:
            old.unlink(missing_ok=True)
    except OSError as error:
        raise ConfigError(f"log.overwrite: cannot delete {error.filename}: "
                          f"{error.strerror}") from None
    warn(f"log.overwrite: deleted the previous run's checkpoints ({names}) and records in "
         f"{run.path}")


def _save_config(config, path, warn):
    """config.toml as resolved; a full disk costs only this file (said, and the run goes on)."""
    target, partial = path / "config.toml", path / "config.toml.partial"
    try:
        partial.write_text(configuration.to_toml(config))
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        warn(f"warning: could not write {target} ({fs.reason(error)}); the run goes on",
             flush=True)
