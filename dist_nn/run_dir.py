"""The run directory: one place decides who may write into it.

A run directory belongs to one run, named by a run id that every checkpoint records. Rank 0
claims the directory for the run's life with an exclusive lock (`flock` on `run.lock`,
released by the kernel when the process ends, however it ends), so a second live run into it
is refused. A directory that holds checkpoints belongs to the run that wrote them: only that
run continues there (--resume auto, or --resume of one of its checkpoints); a fresh run, or
a resume of another run's checkpoint, is refused unless `log.overwrite=true` deletes that
run's files. A checkpoint resumed into an empty directory starts a new run there, which
records where it came from. The run's own files are never written through a symbolic link.
The decision is rank 0's and every rank raises the same ConfigError. Nothing is written
into the directory before the start is accepted but the lock; then record_start() writes
config.toml (this start's config) and a line of starts.jsonl (every start's).
"""
import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import uuid
from pathlib import Path

from . import checkpoint, config as configuration, fs
from .config import ConfigError

LOCK = "run.lock"
STARTS = "starts.jsonl"  # one line per start of the run
PSEUDO_FILE_SYSTEMS = ("/proc", "/sys", "/dev")  # writing there changes the system
# another run's records, deleted with its checkpoints by log.overwrite
RUN_RECORDS = ("config.toml", STARTS, "metrics.jsonl", "metrics.csv", "debug.jsonl",
               "loss.png", "accuracy.png", "lr.png")
TENSORBOARD = "tensorboard"


class RunDir:
    """A claimed run directory: `path`, `checkpoints`, and `run_id`, the id of the run that
    writes there (for its checkpoints). On rank 0 it holds the lock until release(), or until
    it is garbage: keep it for the run's life."""

    def __init__(self, path, run_id, lock=None):
        self.path, self.run_id, self._lock = Path(path), run_id, lock
        self.checkpoints = self.path / "checkpoints"

    def record_start(self, config, resumed_from=None, origin=None, warn=print):
        """Once the start is accepted (rank 0): the folder for checkpoints, config.toml (the
        config of this start) and a line in starts.jsonl for every start (its time, run id,
        the checkpoint it resumed and that checkpoint's run id, its config), so the configs
        of earlier starts are kept. A full disk costs only these records (said, and the run
        goes on: the checkpoints say the same)."""
        text = configuration.to_toml(config)
        line = json.dumps({"time": datetime.datetime.now().isoformat(timespec="seconds"),
                           "run_id": self.run_id, "resumed_from": resumed_from,
                           "resumed_run_id": origin, "config": text})
        try:
            self.checkpoints.mkdir(exist_ok=True)
            fs.write_atomically(self.path / "config.toml", text)
            with open(self.path / STARTS, "a", encoding="utf-8") as starts:
                starts.write(line + "\n")
        except OSError as error:
            warn(f"warning: could not record this start in {self.path} "
                 f"({fs.reason(error)}); the run goes on", flush=True)

    def release(self):
        if self._lock is not None:
            self._lock.close()  # closing the descriptor drops the flock
            self._lock = None


def claim(config, comm, resume=None, origin=None, warn=print):
    """Create (or take) the run directory of `config` on rank 0 and lock it; refuse another
    run's directory. `resume`: --resume as given ("auto", a checkpoint path, or None);
    `origin`: the run id of the checkpoint resumed (None: a fresh start, or none recorded).
    Returns a RunDir on every rank, or raises ConfigError on every rank."""
    run, error = None, None
    if comm.rank == 0:
        try:
            run = _claim(config, resume, origin, warn)
        except ConfigError as failure:
            error = str(failure)
    error = comm.bcast_obj(error)
    if error is not None:
        raise ConfigError(error)
    path, run_id = comm.bcast_obj((str(run.path), run.run_id) if comm.rank == 0 else None)
    return run if comm.rank == 0 else RunDir(path, run_id)


def _claim(config, resume, origin, warn):
    path = Path(config.log.run_dir or
                Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f"))
    real = os.path.realpath(path)
    if any(real == top or real.startswith(top + "/") for top in PSEUDO_FILE_SYSTEMS):
        raise ConfigError(f"log.run_dir {path} is on a system file system ({real}): choose a "
                          "directory for the run's files")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"log.run_dir {path} is a file, not a directory")
    for name in (LOCK, "checkpoints", TENSORBOARD) + RUN_RECORDS:
        if (path / name).is_symlink():
            raise ConfigError(f"{path / name} is a symbolic link: the run's files are "
                              "written only inside its directory; remove the link")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # unbuffered: nothing left to flush; O_NOFOLLOW: a link put there since is refused
        lock = os.fdopen(os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644),
                         "r+b", buffering=0)
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
    run = RunDir(path, None, lock)
    try:
        _note_holder(lock)
        continued = _continues_its_run(config, run, resume, origin, warn)
    except BaseException:
        run.release()
        raise
    run.run_id = origin if continued and origin else uuid.uuid4().hex
    return run


def _note_holder(lock):
    """Who holds the lock, for the message a second run gets (best effort: a full disk)."""
    try:
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                   f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}\n".encode())
    except OSError:
        pass


def _continues_its_run(config, run, resume, origin, warn):
    """Whether this start continues the run whose checkpoints are here (then it keeps its
    run id). A fresh run, or a resume of another run's checkpoint, takes a directory with
    checkpoints only when log.overwrite deletes that run's files."""
    found = checkpoint.all_checkpoints(run.checkpoints)
    if resume == "auto" or not found:
        return resume == "auto"
    if resume:
        owner = next(filter(None, map(checkpoint.run_id, found[:3])), None)
        if (origin is not None and origin == owner) or \
                checkpoint.lies_in(resume, run.checkpoints):
            return True
    names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
    if not config.log.overwrite:
        start = f"resuming {resume} there" if resume else "a fresh run there"
        raise ConfigError(f"the run directory {run.path} holds another run's checkpoints "
                          f"({names}): continue that run with --resume auto, start {start} "
                          "with log.overwrite=true (deletes them), or choose another "
                          "log.run_dir")
    try:  # its checkpoints, the parts a crash left of them, its records
        for old in found + sorted(run.checkpoints.glob("*.partial")) + \
                [run.path / name for name in RUN_RECORDS]:
            old.unlink(missing_ok=True)
        if (run.path / TENSORBOARD).is_dir():
            shutil.rmtree(run.path / TENSORBOARD)
    except OSError as error:
        raise ConfigError(f"log.overwrite: cannot delete {error.filename}: "
                          f"{error.strerror}") from None
    warn(f"log.overwrite: deleted the previous run's checkpoints ({names}) and records in "
         f"{run.path}")
    return False
