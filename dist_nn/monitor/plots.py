"""PNG plots of a run's metrics.jsonl: loss, accuracy and learning rate against the step."""
import os
from pathlib import Path

from .. import fs
from .metrics import read_records

# file name -> (record key, y-axis label, splits drawn)
PLOTS = {"loss.png": ("loss", "loss", ("train", "val")),
         "accuracy.png": ("accuracy", "accuracy", ("train", "val")),
         "lr.png": ("lr", "learning rate", ("train",))}


def plot_run(run_dir, out_dir=None):
    """Write loss.png, accuracy.png and lr.png into out_dir (default: run_dir); return their
    paths. Train records (many per epoch) are drawn as a line, val records (one per epoch) as
    markers at their steps. A resumed run repeats the steps after its last checkpoint: the
    later record of a step wins."""
    try:
        # the Figure API renders with Agg without pyplot, leaving the caller's backend alone
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install matplotlib") from None
    records = read_records(run_dir)
    out_dir = Path(run_dir if out_dir is None else out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RuntimeError(f"cannot create {out_dir}: {fs.reason(error)}") from None
    paths = []
    for name, (key, label, splits) in PLOTS.items():
        figure = Figure(figsize=(6.4, 4.0), layout="tight")
        axes = figure.add_subplot()
        for split in splits:
            steps, values = _curve(records, split, key)
            if steps:
                axes.plot(steps, values, "-" if split == "train" else "o-", label=split)
        axes.set_xlabel("step")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
        _save(figure, out_dir / name)
        paths.append(out_dir / name)
    return paths


def _save(figure, path):
    """Write a PNG whole or not at all; a failed write (a full disk) is a RuntimeError with
    a short message, like a missing matplotlib: the run reports it and goes on."""
    partial = path.with_name(path.name + ".partial")
    try:
        figure.savefig(partial, dpi=100, format="png")
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"cannot write {path}: {fs.reason(error)}") from None


def _curve(records, split, key):
    """(steps, values) of one split, sorted by step, the last record of a step kept; the
    trainer's per-epoch summaries (scope "epoch") are left out of the step-wise curves."""
    points = {record["step"]: record[key] for record in records
              if record["split"] == split and record.get(key) is not None
              and record.get("scope") != "epoch"}
    steps = sorted(points)
    return steps, [points[step] for step in steps]
