import math
import subprocess
import sys
from pathlib import Path

import pytest

from dist_nn.monitor import MetricsLog, plot_run, plots

pytest.importorskip("matplotlib", reason="the plot extra's matplotlib is not installed")

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    with MetricsLog(run, tensorboard=False) as log:
        for epoch in range(3):
            for step in range(epoch * 10 + 1, epoch * 10 + 11):
                log.write({"split": "train", "epoch": epoch, "step": step, "loss": 2.0 / step,
                           "accuracy": 1 - 1.0 / step, "lr": 0.1 * 0.9 ** epoch,
                           "samples_per_s": 1000.0, "time": 0.1 * step})
            log.write({"split": "val", "epoch": epoch, "step": epoch * 10 + 10,
                       "loss": 0.5 / (epoch + 1), "accuracy": 0.6 + 0.1 * epoch,
                       "lr": 0.1 * 0.9 ** epoch, "samples_per_s": 5000.0, "time": epoch + 1.0})
    return run


def assert_png(path):
    data = Path(path).read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 5000  # axes, curves and labels, not an empty image


def test_plot_run_writes_the_three_pngs(run_dir):
    paths = plot_run(run_dir)
    assert [Path(p).name for p in paths] == ["loss.png", "accuracy.png", "lr.png"]
    assert all(Path(p).parent == run_dir for p in paths)
    for path in paths:
        assert_png(path)


def test_plot_run_writes_into_out_dir(run_dir, tmp_path):
    paths = plot_run(run_dir, tmp_path / "plots")
    assert all(Path(p).parent == tmp_path / "plots" for p in paths)
    assert not (run_dir / "loss.png").exists()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "dist_nn.plot", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_prints_the_written_paths(run_dir, tmp_path):
    result = run_cli(run_dir, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    printed = result.stdout.split()
    assert [Path(p).name for p in printed] == ["loss.png", "accuracy.png", "lr.png"]
    for path in printed:
        assert_png(path)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_cli_fails_cleanly_without_metrics(tmp_path, make):
    run = tmp_path / "run"
    if make == "empty":
        run.mkdir()
    result = run_cli(run)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(run) in result.stderr


def test_a_full_disk_is_a_short_runtime_error_and_leaves_no_partial_png(run_dir, tiny_tmpfs):
    disk = tiny_tmpfs("16k")
    (disk / "filler").write_bytes(b"\0" * 12 * 1024)
    with pytest.raises(RuntimeError, match=f"cannot write {disk}/loss.png: No space left"):
        plot_run(run_dir, disk)
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_accuracy_tells_99_0_from_99_4_and_the_title_names_the_run(tmp_path):
    run = tmp_path / "mnist-lr0.1"
    with MetricsLog(run, tensorboard=False) as log:
        for step in range(1, 201):
            log.write({"split": "train", "epoch": step // 20, "step": step, "loss": 1.0 / step,
                       "accuracy": 1 - 0.9 * math.exp(-step / 20), "lr": 0.1})
        for epoch, accuracy in enumerate([0.5, 0.9, 0.97, 0.99, 0.985, 0.99, 0.991, 0.992,
                                          0.993, 0.994]):
            log.write({"split": "val", "epoch": epoch, "step": 20 * (epoch + 1), "loss": 0.1,
                       "accuracy": accuracy, "lr": 0.1})
    records = plots.read_records(run)
    figure = plots.draw(records, "accuracy", "accuracy", ("train", "val"), "mnist-lr0.1: accuracy")
    axes = figure.axes[0]
    low, high = axes.get_ylim()
    assert (0.994 - 0.990) / (high - low) > 0.1  # a tenth of the axis apart, not a pixel
    assert axes.get_title() == "mnist-lr0.1: accuracy"
    assert "val (final 99.40%)" in [t.get_text() for t in axes.get_legend().get_texts()]
    assert axes.yaxis.get_major_formatter()(0.994, 0).endswith("%")
    plot_run(run)
    assert_png(run / "accuracy.png")


def test_records_with_per_rank_times_add_ranks_png(tmp_path):
    """A run resumed from 2 onto 3 ranks: each rank's line where it has times, in ms."""
    run = tmp_path / "run"
    with MetricsLog(run, tensorboard=False) as log:
        for step, size in ((5, 2), (10, 2), (15, 3), (20, 3)):
            log.write({"split": "train", "epoch": 0, "step": step, "loss": 1.0, "accuracy": 0.5,
                       "lr": 0.1, "ranks": {"compute": [0.02] * (size - 1) + [0.06],
                                            "data_wait": [0.0] * size,
                                            "collective_wait": [0.04] * (size - 1) + [0.0]},
                       "exposed_comm_s": 0.02, "straggler": size - 1})
    paths = plot_run(run)
    assert [Path(p).name for p in paths] == ["loss.png", "accuracy.png", "lr.png", "ranks.png"]
    assert_png(run / "ranks.png")
    figure = plots.draw_ranks(plots.read_records(run), "run: ranks")
    compute, data_wait, collective_wait = figure.axes
    assert [line.get_label() for line in compute.get_lines()] == ["rank 0", "rank 1", "rank 2"]
    assert list(compute.get_lines()[1].get_ydata()) == [60.0, 60.0, 20.0, 20.0]
    assert list(compute.get_lines()[2].get_xdata()) == [15, 20]
    assert [axes.get_ylabel() for axes in figure.axes] == [
        "compute (ms)", "data wait (ms)", "collective wait (ms)"]
