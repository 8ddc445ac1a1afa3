"""The metrics log of a run: metrics.jsonl (the contract, DESIGN §3), metrics.csv for
spreadsheets, and TensorBoard event files when the tensorboard package is there."""
import csv
import json
import numbers
import time
from pathlib import Path

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
    `allreduce_wait`, `optimizer`, seconds) and any other numeric keys are optional.
    metrics.jsonl holds every key. metrics.csv has the fixed columns CSV_COLUMNS, an empty cell
    for an absent one; other keys are JSONL-only (and TensorBoard), so the header never changes.
    An existing run directory (a resumed run) is appended to, and a line torn by a crash
    mid-write is dropped first.

    tensorboard: "auto" writes scalars `<split>/<key>` at `step` under run_dir/tensorboard/
    when the tensorboard package imports, True requires it, False writes no event files.
    """

    def __init__(self, run_dir, tensorboard="auto"):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # first: tensorboard=True without the package fails before any file is opened
        self._events = _event_writer(self.run_dir / "tensorboard", tensorboard)
        jsonl_path, csv_path = self.run_dir / "metrics.jsonl", self.run_dir / "metrics.csv"
        for path in (jsonl_path, csv_path):
            _drop_torn_line(path)
        self._jsonl = open(jsonl_path, "a", encoding="utf-8")
        self._csv_file = open(csv_path, "a", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._csv_file, CSV_COLUMNS, restval="",
                                   extrasaction="ignore", lineterminator="\n")
        if self._csv_file.tell() == 0:
            self._csv.writeheader()

    def write(self, record):
        missing = [key for key in REQUIRED if key not in record]
        if missing:
            raise ValueError(f"a metrics record needs the keys {missing}, got {sorted(record)}")
        if record["split"] not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {record['split']!r}")
        # device/NumPy scalars (e.g. a loss that is a 0-d array) become plain Python numbers
        record = {key: value.item() if hasattr(value, "item") else value
                  for key, value in record.items()}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        self._csv.writerow(record)
        self._csv_file.flush()
        if self._events is not None:
            self._write_scalars(record)

    def _write_scalars(self, record):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        values = [summary_pb2.Summary.Value(tag=f"{record['split']}/{key}", simple_value=value)
                  for key, value in record.items()
                  if key != "step" and isinstance(value, numbers.Real)]
        self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(record["step"]),
                                               summary=summary_pb2.Summary(value=values)))

    def close(self):
        if self._events is not None:
            self._events.close()  # flushes the queued events first
            self._events = None
        self._jsonl.close()
        self._csv_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


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


def _event_writer(logdir, tensorboard):
    if tensorboard is False:
        return None
    try:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        if tensorboard == "auto":
            return None
        raise
    # flush every few seconds, so that a TensorBoard watching the run follows it
    return EventFileWriter(str(logdir), flush_secs=10)
