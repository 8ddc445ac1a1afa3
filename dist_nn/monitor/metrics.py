"""The metrics log of a run: metrics.jsonl (the contract, docs/design.md §3.8), metrics.csv for
spreadsheets, and TensorBoard event files when the tensorboard package is there."""
import csv
import errno
import io
import json
import numbers
import os
import socket
import time
from pathlib import Path

from .. import fs

REQUIRED = ("split", "epoch", "step", "loss", "accuracy", "lr")
CSV_COLUMNS = REQUIRED + ("samples_per_s", "time",
                          "data_wait", "compute", "allreduce_wait", "optimizer")


class MetricsLog:
    """Append records to `run_dir`'s metrics files (rank 0 only).

        with MetricsLog(run_dir) as log:
            log.write({"split": "train", "epoch": 0, "step": 10, "loss": 2.1, "accuracy": 0.3,
                       "lr": 0.1, "samples_per_s": 5000.0, "time": 1.7})

    A record needs the keys of REQUIRED and is expected to have `samples_per_s` and `time`
    (seconds since the run started); the epoch time split (`data_wait`, `compute`,
    `allreduce_wait`, `optimizer`, seconds), the per-rank times (`ranks`, a table of lists;
    `exposed_comm_s`; `straggler`, a rank or None) and any other numeric keys are optional.
    metrics.jsonl holds every key. metrics.csv has the fixed columns CSV_COLUMNS, an empty cell
    for an absent one; other keys are JSONL-only (and TensorBoard), so the header never changes.
    An existing run directory (a resumed run) is appended to, and a line torn by a crash
    mid-write is dropped first.

    tensorboard: "auto" writes scalars `<split>/<key>` at `step` into an event file under
    run_dir/tensorboard/ when the tensorboard package imports, True requires it, False writes
    no event files.

    Every write can fail (a full disk, a lost mount): a record that cannot be written is
    rolled back to whole lines, the first failure of each file is said through `warn`, and
    training goes on; later records are appended whenever they fit. Writes are synchronous: no writer thread
    that could die of a full disk.
    """

    def __init__(self, run_dir, tensorboard="auto", warn=print):
        self.run_dir, self.warn = Path(run_dir), warn
        self.failing = set()  # files a write has failed on (said once)
        self.jsonl, self.csv = self.run_dir / "metrics.jsonl", self.run_dir / "metrics.csv"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.events = _event_file(self.run_dir / "tensorboard", tensorboard)
        for path in (self.jsonl, self.csv):
            self._guarded(path, _drop_torn_line, path)

    def write(self, record):
        missing = [key for key in REQUIRED if key not in record]
        if missing:
            raise ValueError(f"a metrics record needs the keys {missing}, got {sorted(record)}")
        if record["split"] not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {record['split']!r}")
        # device/NumPy scalars (e.g. a loss that is a 0-d array) become plain Python numbers
        record = {key: value.item() if hasattr(value, "item") else value
                  for key, value in record.items()}
        self._guarded(self.jsonl, _append, self.jsonl, (json.dumps(record) + "\n").encode())
        self._guarded(self.csv, _append_csv_row, self.csv, record)
        if self.events is not None:
            self._guarded(self.events, _append_event, self.events, _scalars(record))

    def _guarded(self, path, write, *args):
        try:
            write(*args)
        except OSError as error:
            if path not in self.failing:
                self.failing.add(path)
                self.warn(f"warning: could not write {path} ({fs.reason(error)}); "
                          "training goes on, and records that do not fit are left out",
                          flush=True)

    def close(self):
        """Nothing stays open between writes; kept for `with` and for callers."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _append(path, data):
    """Append bytes whole or not at all: a write cut short (a full disk) is rolled back."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def _append_csv_row(path, record):
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_COLUMNS, restval="", extrasaction="ignore",
                            lineterminator="\n")
    if not path.exists() or path.stat().st_size == 0:
        writer.writeheader()
    writer.writerow(record)
    _append(path, text.getvalue().encode())


def _append_event(path, data):
    if not path.exists():  # a new event file starts with its format version
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _event_record(file_version="brain.Event:2") + data
    _append(path, data)


def _event_file(logdir, tensorboard):
    """The path of this run's new TensorBoard event file, or None without event files."""
    if tensorboard is False:
        return None
    try:
        import tensorboard.summary.writer.record_writer  # noqa: F401
    except ImportError:
        if tensorboard == "auto":
            return None
        raise
    return logdir / (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                     f"{os.getpid()}.0")


def _event_record(**fields):
    """One TensorBoard event as the bytes of a TFRecord (length, CRCs, the protobuf)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter
    out = io.BytesIO()
    RecordWriter(out).write(event_pb2.Event(wall_time=time.time(), **fields)
                            .SerializeToString())
    return out.getvalue()


def _scalars(record):
    from tensorboard.compat.proto import summary_pb2
    values = [summary_pb2.Summary.Value(tag=f"{record['split']}/{key}", simple_value=value)
              for key, value in record.items()
              if key != "step" and isinstance(value, numbers.Real)]
    return _event_record(step=int(record["step"]), summary=summary_pb2.Summary(value=values))


def read_records(run_dir):
    """The records of run_dir/metrics.jsonl as a list of dicts, in the order written. A torn last
    line (a crash mid-write) is skipped; a malformed line before it is an error."""
    path = Path(run_dir) / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines) and not line.endswith("\n"):
                break
            raise ValueError(f"{path}:{number}: not a JSON record: {line.strip()[:80]}")
    return records


def _drop_torn_line(path):
    """Cut a partial last line, so that appended records start on a line of their own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as file:
            file.truncate(data.rfind(b"\n") + 1)
