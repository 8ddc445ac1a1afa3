import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest

from dist_nn.monitor import MetricsLog
from launch import search
from launch.search import Param

ROOT = Path(__file__).resolve().parents[2]

SPACE = """
[params]
"optim.lr" = {low = 1e-4, high = 1.0, scale = "log"}
"model.dropout" = {low = 0.0, high = 0.5}
"data.global_batch_size" = {low = 16, high = 128, scale = "log"}
"optim.name" = {choices = ["sgd", "adam", "rmsprop"]}
[fixed]
"train.epochs" = 3
"""


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def space(tmp_path):
    return search.load_space(write(tmp_path / "space.toml", SPACE))


def fake_runner(accuracy, returncode=lambda params: 0):
    """A runner that trains nothing: it records a val accuracy (and loss) of `accuracy(params)`
    at step 10 and 0.9 times that at step 20, and exits with `returncode(params)`."""
    def run(overrides, run_dir):
        params = {key: json.loads(value) for key, value in
                  (item.split("=", 1) for item in overrides) if not key.startswith("log.")}
        with MetricsLog(run_dir, tensorboard=False) as log:
            for step, value in ((10, accuracy(params)), (20, 0.9 * accuracy(params))):
                log.write({"split": "val", "epoch": 0, "step": step, "loss": value,
                           "accuracy": value, "lr": params["optim.lr"]})
        code = returncode(params)
        return code, "" if code == 0 else "the last line of stderr"
    return run


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


# --- sampling ------------------------------------------------------------------------------

def test_draws_stay_in_their_ranges_with_the_keys_types(space):
    draws = [search.draw(space.params, 0, trial) for trial in range(2000)]
    for name in ("optim.lr", "model.dropout", "data.global_batch_size"):
        param = space.params[name]
        assert all(param.low <= d[name] <= param.high for d in draws)
    assert all(type(d["data.global_batch_size"]) is int for d in draws)  # an integer key
    assert all(type(d["model.dropout"]) is float for d in draws)
    assert {d["optim.name"] for d in draws} == {"sgd", "adam", "rmsprop"}


def test_log_uniform_is_uniform_in_log_space():
    param = Param("optim.lr", 1e-4, 1.0, log=True)
    rng = numpy.random.default_rng(0)
    n = 4000
    u = numpy.sort([math.log(param.draw(rng) / 1e-4) / math.log(1e4) for _ in range(n)])
    # Kolmogorov-Smirnov against uniform on [0, 1); 1.63 / sqrt(n) is the 1% critical value
    ks = max(numpy.max(numpy.arange(1, n + 1) / n - u), numpy.max(u - numpy.arange(n) / n))
    assert ks < 1.63 / math.sqrt(n)
    # a uniform draw on [1e-4, 1] would put ~1% below 1e-2, the geometric middle
    assert numpy.mean(u < 0.5) == pytest.approx(0.5, abs=0.03)


def test_draws_depend_only_on_seed_and_trial(space):
    assert search.draw(space.params, 7, 3) == search.draw(space.params, 7, 3)
    assert search.draw(space.params, 7, 3) != search.draw(space.params, 8, 3)
    assert search.draw(space.params, 7, 3) != search.draw(space.params, 7, 4)


def test_a_seeded_search_repeats_itself(space, tmp_path):
    runner = fake_runner(lambda p: 1 - abs(math.log10(p["optim.lr"]) + 2) / 4)
    for out in (tmp_path / "a", tmp_path / "b"):
        search.search(space, out, trials=4, rounds=2, metric="val_accuracy", seed=3,
                      runner=runner)
    assert read_csv(tmp_path / "a/results.csv") == read_csv(tmp_path / "b/results.csv")


# --- refinement ----------------------------------------------------------------------------

def test_refinement_shrinks_around_the_top_trials_inside_the_original(space):
    best = [{"params": {"optim.lr": 1e-3, "model.dropout": 0.1, "data.global_batch_size": 32,
                        "optim.name": "adam"}},
            {"params": {"optim.lr": 4e-3, "model.dropout": 0.2, "data.global_batch_size": 64,
                        "optim.name": "sgd"}}]
    refined = search.refine(space.params, space.params, best)
    lr, dropout = refined["optim.lr"], refined["model.dropout"]
    # the top span widened by 10% of the old width: in log space for lr (4 decades -> 0.4)
    assert math.log10(lr.low) == pytest.approx(-3.4) and math.log10(lr.high) == pytest.approx(
        math.log10(4e-3) + 0.4)
    assert (dropout.low, dropout.high) == pytest.approx((0.05, 0.25))
    assert refined["optim.name"].choices == ("sgd", "adam")
    # top trials at the edge: the range stays inside the original one
    edge = [{"params": {**b["params"], "optim.lr": 1.0, "model.dropout": 0.0}} for b in best]
    clipped = search.refine(space.params, refined, edge)
    assert clipped["optim.lr"].high == 1.0 and clipped["model.dropout"].low == 0.0
    assert clipped["optim.lr"].low > 1e-4


def test_later_rounds_sample_near_the_best(space, tmp_path):
    # the fake accuracy peaks at lr = 1e-2
    runner = fake_runner(lambda p: 1 - abs(math.log10(p["optim.lr"]) + 2) / 4)
    results = search.search(space, tmp_path, trials=8, rounds=3, metric="val_accuracy", seed=0,
                            runner=runner)
    distance = {r: numpy.mean([abs(math.log10(t["params"]["optim.lr"]) + 2)
                               for t in results if t["round"] == r]) for r in (1, 2, 3)}
    assert distance[3] < distance[2] < distance[1]
    assert all(1e-4 <= t["params"]["optim.lr"] <= 1.0 for t in results)


# --- bad spaces ----------------------------------------------------------------------------

@pytest.mark.parametrize("param, message", [
    ('optim.lr={low=1, high=1e-3}', "optim.lr: low (1) must be below high (0.001)"),
    ('optim.lr={low=0, high=1, scale="log"}', "optim.lr: a log scale needs low > 0, got 0"),
    ('optim.lr={low=0.1}', "optim.lr: low and high must both be numbers"),
    ('optim.lr={low=0.1, high=1, scale="ln"}', 'scale must be "linear" or "log"'),
    ('optim.lr={choices=[]}', "optim.lr: choices must be a non-empty list"),
    ('optim.lrr={low=0.1, high=1}', "unknown key optim.lrr"),
    ('optimm.lr={low=0.1, high=1}', "unknown section [optimm]"),
    ('optim.name={choices=["sgd", "sgdd"]}', "optim.name = 'sgdd' is not one of"),
    ('model.dropout={low=0, high=1}', "model.dropout must be in [0, 1), got 1.0"),
    ('data.global_batch_size={low=16.5, high=64}',
     "data.global_batch_size must be an integer, got 16.5"),
    ('log.run_dir={choices=["x"]}', "log.run_dir is the search's"),
])
def test_bad_spaces_are_refused_before_anything_runs(param, message, tmp_path, capsys):
    assert search.main(["--out", str(tmp_path / "out"), "--param", param]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, message", [
    ('[params]\n"optim.lr" = 0.1\n', "optim.lr: give {low = ..., high = ..."),
    ('[params]\n"optim.lr" = {low = 0.1, high = 1}\n[fixed]\n"train.epochs" = -1\n',
     "train.epochs must be >= 1, got -1"),
    ('[params]\n"optim.lr" = {low = 0.1, high = 1}\n[sweep]\n',
     "a space has the tables [params] and [fixed], nothing else; got ['params', 'sweep']"),
    ('[fixed]\n"train.epochs" = 1\n', "nothing to search"),
    ('params = 1\n', "a space has the tables [params] and [fixed]"),
    ('[params\n', "is not valid TOML"),
])
def test_bad_space_files_are_refused(text, message, tmp_path, capsys):
    path = write(tmp_path / "space.toml", text)
    assert search.main(["--out", str(tmp_path / "out"), "--space", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_params_from_flags_win_over_the_file(tmp_path):
    path = write(tmp_path / "space.toml", SPACE)
    space = search.load_space(path, ['optim.lr={low=0.01, high=0.1}', "model.dropout=0.2",
                                     "train.max_steps=30"])
    assert space.params["optim.lr"] == Param("optim.lr", 0.01, 0.1)
    assert "model.dropout" not in space.params
    assert space.fixed == {"train.epochs": 3, "model.dropout": 0.2, "train.max_steps": 30}


# --- results -------------------------------------------------------------------------------

def test_results_are_sorted_best_first_with_their_statuses(space, tmp_path):
    def returncode(params):  # rmsprop "diverges", adam "crashes"
        return {"sgd": 0, "rmsprop": 3, "adam": 1}[params["optim.name"]]

    written = []

    def runner(overrides, run_dir):  # results.csv holds every trial before this one
        written.append(len(read_csv(tmp_path / "results.csv"))
                       if (tmp_path / "results.csv").exists() else 0)
        return fake_runner(lambda p: p["model.dropout"], returncode)(overrides, run_dir)

    search.search(space, tmp_path, trials=12, rounds=1, metric="val_accuracy", seed=0,
                  runner=runner)
    assert written == list(range(12))
    rows = read_csv(tmp_path / "results.csv")
    assert list(rows[0]) == ["trial", "round", "status", "val_accuracy_best",
                             "val_accuracy_final", "step", "optim.lr", "model.dropout",
                             "data.global_batch_size", "optim.name", "exit", "error"]
    statuses = {"sgd": "ok", "rmsprop": "diverged", "adam": "failed"}
    assert [row["status"] for row in rows] == [statuses[row["optim.name"]] for row in rows]
    assert {row["status"] for row in rows} == set(statuses.values())
    ok = [row for row in rows if row["status"] == "ok"]
    assert rows[:len(ok)] == ok  # finished trials first, best first
    best = [float(row["val_accuracy_best"]) for row in ok]
    assert best == sorted(best, reverse=True)
    for row in ok:  # the fake accuracy: the dropout at step 10, 0.9 times it at step 20
        assert float(row["val_accuracy_best"]) == float(row["model.dropout"])
        assert float(row["val_accuracy_final"]) == pytest.approx(0.9 * float(row["model.dropout"]))
        assert (row["step"], row["exit"], row["error"]) == ("10", "0", "")
    rest = [int(row["trial"]) for row in rows[len(ok):]]
    assert rest == sorted(rest)  # the others in trial order
    for row in rows[len(ok):]:
        exit_status = "1" if row["status"] == "failed" else "3"
        assert (row["exit"], row["error"]) == (exit_status, "the last line of stderr")


def test_losses_are_minimised(space, tmp_path):
    results = search.search(space, tmp_path, trials=6, rounds=1, metric="val_loss", seed=0,
                            runner=fake_runner(lambda p: p["model.dropout"]))
    # the fake loss falls from step 10 to 20: minimised, its best is the last and the lowest
    # dropout ranks first
    assert [r["best"] for r in results] == sorted(r["best"] for r in results)
    assert results[0]["params"]["model.dropout"] == min(r["params"]["model.dropout"]
                                                         for r in results)
    assert all(r["step"] == 20 and r["final"] == r["best"] for r in results)


def test_array_tasks_draw_as_round_one_and_collect_gathers_them(space, tmp_path):
    runner = fake_runner(lambda p: p["model.dropout"])
    local = search.search(space, tmp_path / "local", trials=4, rounds=1, metric="val_accuracy",
                          seed=5, runner=runner)
    for task in (2, 0, 3, 1):  # as an array's tasks may run
        search.run_trial(tmp_path / "array", task, 1, search.draw(space.params, 5, task), space,
                         "val_accuracy", runner)
    assert not (tmp_path / "array/results.csv").exists()
    assert search.main(["--out", str(tmp_path / "array"), "--collect"]) == 0
    assert read_csv(tmp_path / "array/results.csv") == read_csv(tmp_path / "local/results.csv")
    assert [r["params"] for r in search.collect(tmp_path / "array", "val_accuracy")] == [
        r["params"] for r in local]


def test_collect_with_nothing_to_collect(tmp_path, capsys):
    assert search.main(["--out", str(tmp_path), "--collect"]) == 2
    assert "no trial results" in capsys.readouterr().err


# --- real runs -----------------------------------------------------------------------------

def test_a_runaway_trial_is_killed_after_its_timeout(tmp_path):
    run_dir = f"log.run_dir={tmp_path}"
    code, error = search.run_trainer(["train.epochs=100000", "model.name=mlp", run_dir,
                                      "log.plots=false"], tmp_path, ranks=2, timeout=1.5)
    assert code == -9 and error == "timed out after 1.5 s"
    deadline = time.monotonic() + 10  # mpiexec's proxy ends the ranks once mpiexec is killed
    while subprocess.run(["pgrep", "-f", run_dir], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "a rank outlived its trial's timeout"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_tiny_search_through_the_cli(tmp_path):
    """Three real trials on the digits; an lr of 1e3 explodes at once and the trainer's guard
    stops it (exit 3)."""
    space = write(tmp_path / "space.toml", """
[params]
"optim.lr" = {choices = [0.1, 1000.0]}
"model.dropout" = {low = 0.0, high = 0.2}
[fixed]
"model.name" = "mlp"
"model.hidden" = [16]
"train.max_steps" = 22
""")  # 22 steps: one epoch at the default global batch of 64, so one evaluation
    done = subprocess.run([sys.executable, "-m", "launch.search", "--space", str(space), "--out",
                           str(tmp_path / "out"), "--trials", "3", "--rounds", "1", "--seed", "4",
                           "--timeout", "60"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "out/results.csv")
    assert len(rows) == 3 and "top 3 of 3 by val_accuracy" in done.stdout
    assert {row["status"] for row in rows} == {"ok", "diverged"}  # seed 4: 1000, 0.1, 0.1
    for row in rows:
        if row["status"] == "ok":
            assert row["optim.lr"] == "0.1" and float(row["val_accuracy_best"]) > 0.5
        else:
            assert row["optim.lr"] == "1000.0" and row["exit"] == "3"
            assert "diverging" in row["error"]
    assert rows[-1]["status"] == "diverged"


def test_a_trials_error_is_its_own_last_line_not_the_launchers(tmp_path):
    """MPICH echoes MPI_Abort; Open MPI boxes its notices in lines of dashes."""
    log = write(tmp_path / "stderr.log", "warning: something\nstopped: the run is diverging\n"
                "application called MPI_Abort(MPI_COMM_WORLD, 3)\n" + "-" * 55 + "\n"
                "Primary job  terminated normally, but 1 process returned\n" + "-" * 55 + "\n"
                + "-" * 74 + "\nmpiexec detected that one or more processes exited with "
                "non-zero status\n\n  Exit code:    3\n" + "-" * 74 + "\n\n")
    assert search.last_line(log) == "stopped: the run is diverging"
