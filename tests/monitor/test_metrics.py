import csv
import json
import sys

import numpy
import pytest

from dist_nn.monitor import MetricsLog, read_records
from dist_nn.monitor.metrics import CSV_COLUMNS


def record(split="train", step=1, **extra):
    return {"split": split, "epoch": 0, "step": step, "loss": 1.0 / step, "accuracy": 0.5,
            "lr": 0.1, "samples_per_s": 1000.0, "time": 0.1 * step, **extra}


def csv_rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as file:
        return list(csv.reader(file))


def test_jsonl_and_csv_hold_the_records_in_order(tmp_path):
    records = [record(step=1), record(step=2, data_wait=0.01, compute=0.2),
               record("val", step=2, val_extra=7)]
    with MetricsLog(tmp_path, tensorboard=False) as log:
        for r in records:
            log.write(r)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    assert read_records(tmp_path) == records

    header, *rows = csv_rows(tmp_path)
    assert header == list(CSV_COLUMNS)
    assert header[:8] == ["split", "epoch", "step", "loss", "accuracy", "lr", "samples_per_s",
                          "time"]
    assert [row[:3] for row in rows] == [["train", "0", "1"], ["train", "0", "2"],
                                         ["val", "0", "2"]]
    second = dict(zip(header, rows[1]))
    assert float(second["loss"]) == 0.5
    assert (second["data_wait"], second["compute"], second["optimizer"]) == ("0.01", "0.2", "")
    assert all(len(row) == len(header) for row in rows)  # the extra key is JSONL-only


def test_numpy_scalars_are_written_as_plain_numbers(tmp_path):
    with MetricsLog(tmp_path, tensorboard=False) as log:
        log.write(record(step=numpy.int64(3), loss=numpy.float32(0.25), accuracy=numpy.array(1.0)))
    (written,) = read_records(tmp_path)
    assert (written["step"], written["loss"], written["accuracy"]) == (3, 0.25, 1.0)


def test_a_record_without_the_contract_keys_is_refused(tmp_path):
    with MetricsLog(tmp_path, tensorboard=False) as log:
        with pytest.raises(ValueError, match="accuracy"):
            log.write({"split": "train", "epoch": 0, "step": 1, "loss": 1.0, "lr": 0.1})
        with pytest.raises(ValueError, match="split"):
            log.write(record(split="test"))


def test_a_resumed_run_appends_without_a_second_header(tmp_path):
    with MetricsLog(tmp_path, tensorboard=False) as log:
        log.write(record(step=1))
    with MetricsLog(tmp_path, tensorboard=False) as log:
        log.write(record(step=2))
    assert [r["step"] for r in read_records(tmp_path)] == [1, 2]
    header, *rows = csv_rows(tmp_path)
    assert header == list(CSV_COLUMNS)
    assert [row[2] for row in rows] == ["1", "2"]


def test_a_torn_last_line_is_skipped_and_cut_on_resume(tmp_path):
    with MetricsLog(tmp_path, tensorboard=False) as log:
        log.write(record(step=1))
    with open(tmp_path / "metrics.jsonl", "a") as file:
        file.write('{"split": "train", "epoch": 0, "st')  # a crash mid-write
    with open(tmp_path / "metrics.csv", "a") as file:
        file.write("train,0,")
    assert [r["step"] for r in read_records(tmp_path)] == [1]

    with MetricsLog(tmp_path, tensorboard=False) as log:
        log.write(record(step=2))
    assert [r["step"] for r in read_records(tmp_path)] == [1, 2]
    assert [row[2] for row in csv_rows(tmp_path)[1:]] == ["1", "2"]


def test_a_malformed_line_before_the_last_is_an_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        read_records(tmp_path)


def test_tensorboard_scalars_are_read_back_at_their_steps(tmp_path):
    pytest.importorskip("tensorboard", reason="the dev extra's tensorboard is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    with MetricsLog(tmp_path, tensorboard=True) as log:
        for step in (10, 20, 30):
            log.write(record(step=step, compute=0.5))
        log.write(record("val", step=30, accuracy=0.75))
    accumulator = EventAccumulator(str(tmp_path / "tensorboard"))
    accumulator.Reload()
    scalars = accumulator.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/compute", "val/accuracy"} <= set(scalars)
    assert "train/step" not in scalars
    loss = accumulator.Scalars("train/loss")
    assert [event.step for event in loss] == [10, 20, 30]
    assert [event.value for event in loss] == pytest.approx([0.1, 0.05, 1 / 30])
    (val,) = accumulator.Scalars("val/accuracy")
    assert (val.step, val.value) == (30, 0.75)


def test_tensorboard_false_writes_no_event_files(tmp_path):
    with MetricsLog(tmp_path, tensorboard=False) as log:
        log.write(record())
    assert not (tmp_path / "tensorboard").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "metrics.jsonl"]


def test_auto_without_the_tensorboard_package_writes_no_event_files(tmp_path, monkeypatch):
    # a None entry in sys.modules makes the import fail as if the package were not installed
    monkeypatch.setitem(sys.modules, "tensorboard.summary.writer.record_writer", None)
    with MetricsLog(tmp_path) as log:
        log.write(record())
    assert not (tmp_path / "tensorboard").exists()
    with pytest.raises(ImportError):
        MetricsLog(tmp_path / "required", tensorboard=True)


def test_a_full_disk_is_said_once_and_leaves_whole_records(tiny_tmpfs):
    """A real full file system: records that do not fit are rolled back (no torn line), the
    failure is said once per file, and writing resumes when there is space again."""
    disk = tiny_tmpfs("64k")
    warnings = []
    log = MetricsLog(disk, tensorboard="auto", warn=lambda message, **_: warnings.append(message))
    log.write(record(step=1))
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as file:  # the rest of the disk, to the last byte
        try:
            while True:
                file.write(b"\0" * 512)
        except OSError:
            pass
    for step in range(2, 200):  # more than the slack of each file's last page, CSV too
        log.write(record(step=step, padding="x" * 200))
    said = sorted({w.split(" (")[0] for w in warnings})
    assert len(warnings) == len(said) >= 2  # once per file
    assert all(w.endswith("records that do not fit are left out") for w in warnings)
    filler.unlink()
    log.write(record(step=200))
    log.close()
    steps = [r["step"] for r in read_records(disk)]
    assert steps[0] == 1 and steps[-1] == 200  # whole lines only: read_records would raise
    assert all(len(row) == len(CSV_COLUMNS) for row in csv_rows(disk))
