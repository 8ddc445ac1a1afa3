"""PNG plots of a run's metrics.jsonl: loss, accuracy and learning rate against the step, and
each rank's time split when the records carry it."""
import os
from pathlib import Path

import numpy

from .. import fs
from .metrics import read_records
from .ranks import RANK_TIMES

# file name -> (record key, y-axis label, splits drawn)
PLOTS = {"loss.png": ("loss", "loss", ("train", "val")),
         "accuracy.png": ("accuracy", "accuracy", ("train", "val")),
         "lr.png": ("lr", "learning rate", ("train",))}
RANKS_PLOT = "ranks.png"
LEGEND_MAX_RANKS = 8  # beyond, a legend would hide the lines


def plot_run(run_dir, out_dir=None):
    """Write loss.png, accuracy.png and lr.png, and ranks.png when the training records carry
    per-rank times ("ranks"), into out_dir (default: run_dir); return their paths. Each is
    titled with the run's name (its directory's)."""
    records = read_records(run_dir)
    out_dir = Path(run_dir if out_dir is None else out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RuntimeError(f"cannot create {out_dir}: {fs.reason(error)}") from None
    run_name = Path(run_dir).resolve().name
    paths = []
    for name, (key, label, splits) in PLOTS.items():
        _save(draw(records, key, label, splits, f"{run_name}: {label}"), out_dir / name)
        paths.append(out_dir / name)
    if _curve(records, "train", "ranks")[0]:
        _save(draw_ranks(records, f"{run_name}: time per step of each rank"),
              out_dir / RANKS_PLOT)
        paths.append(out_dir / RANKS_PLOT)
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


def draw(records, key, label, splits, title):
    """The Figure of one metric against the step. Train records (many per epoch) are a line,
    val records (one per epoch) markers at their steps; a resumed run repeats the steps after
    its last checkpoint: the later record of a step wins. Accuracy is in percent, each
    legend entry gives the final value, and the axis zooms in on the second half of the run,
    so that 99.0% and 99.4% lie apart."""
    figure = _figure(figsize=(6.4, 4.0))
    from matplotlib.ticker import AutoMinorLocator, PercentFormatter
    axes = figure.add_subplot()
    curves = {split: _curve(records, split, key) for split in splits}
    for split, (steps, values) in curves.items():
        if steps:
            final = f" (final {values[-1]:.2%})" if key == "accuracy" else ""
            axes.plot(steps, values, "-" if split == "train" else "o-", label=split + final)
    if key == "accuracy" and any(steps for steps, _ in curves.values()):
        axes.set_ylim(*_late_range(curves))
        axes.yaxis.set_major_formatter(PercentFormatter(1.0))
        axes.yaxis.set_minor_locator(AutoMinorLocator())
        axes.grid(which="minor", alpha=0.15)
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel(label)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    return figure


def draw_ranks(records, title):
    """The Figure of each rank's compute, data wait and collective wait (ms per step) against
    the step, one panel each; a run resumed on more ranks draws the new ones from there."""
    steps, times = _curve(records, "train", "ranks")
    figure = _figure(figsize=(6.4, 7.2))
    panels = figure.subplots(len(RANK_TIMES), 1, sharex=True)
    size = max(len(record["compute"]) for record in times)
    for axes, key in zip(panels, RANK_TIMES):
        for rank in range(size):
            points = [(step, 1000 * record[key][rank]) for step, record in zip(steps, times)
                      if rank < len(record[key])]
            axes.plot(*zip(*points), label=f"rank {rank}")
        axes.set_ylabel(f"{key.replace('_', ' ')} (ms)")
        axes.grid(alpha=0.3)
    panels[0].set_title(title)
    panels[-1].set_xlabel("step")
    if size <= LEGEND_MAX_RANKS:
        panels[0].legend(fontsize="small")
    return figure


def _figure(figsize):
    """A matplotlib Figure; RuntimeError without matplotlib (the run says it and goes on)."""
    try:
        # the Figure API renders with Agg without pyplot, leaving the caller's backend alone
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install matplotlib") from None
    return Figure(figsize=figsize, layout="tight")


def _late_range(curves):
    """y limits holding the second half of the run: all of its val points and the upper half
    of its (noisy, per-batch) train points, with a margin, never above 100% + margin."""
    last_step = max(steps[-1] for steps, _ in curves.values() if steps)
    late = {split: [v for s, v in zip(steps, values) if s >= last_step / 2]
            for split, (steps, values) in curves.items()}
    lows = [min(v) if split == "val" else numpy.median(v)
            for split, v in late.items() if v]
    low, high = min(lows), min(1.0, max(max(v) for v in late.values() if v))
    margin = max(high - low, 0.002) * 0.1
    return low - margin, high + margin


def _curve(records, split, key):
    """(steps, values) of one split, sorted by step, the last record of a step kept; the
    trainer's per-epoch summaries (scope "epoch") are left out of the step-wise curves."""
    points = {record["step"]: record[key] for record in records
              if record["split"] == split and record.get(key) is not None
              and record.get("scope") != "epoch"}
    steps = sorted(points)
    return steps, [points[step] for step in steps]
