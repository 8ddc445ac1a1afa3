"""Random hyper-parameter search over `python -m dist_nn.train` runs, coarse to fine.

    python -m launch.search --space space.toml --out search/ --trials 8 --rounds 2 --ranks 1 \\
        --metric val_accuracy --seed 0 [--timeout SEC] [--param KEY=SPEC ...]
    (installed: dist-nn-search ...)

The space (a TOML file and/or `--param` flags, which win over the file; launch/space.toml in
the repository is a commented example; keys are dist_nn.train's, see the configuration
reference docs/configuration.md or `python -m dist_nn.config --reference`):

    [params]                                                # searched
    "optim.lr" = {low = 1e-4, high = 1.0, scale = "log"}   # log-uniform
    "model.dropout" = {low = 0.0, high = 0.5}              # uniform
    "optim.name" = {choices = ["sgd", "adam"]}
    [fixed]                                                 # every trial: keep them short
    "train.epochs" = 3

`--param 'optim.lr={low=1e-4, high=1, scale="log"}'` searches a key, `--param train.max_steps=30`
fixes one. Every key and value is checked by the trainer's own config validation before
anything runs; integer keys (e.g. data.global_batch_size) draw integers.

Each round runs --trials trials, one after another, each as
`python -m dist_nn.train log.run_dir=<out>/trial-NNN log.plots=false log.tensorboard=off ...`
on --ranks local ranks (launch.mpirun). A trial scores the best and the final value of --metric
in its metrics.jsonl (accuracies maximised, losses minimised; val_* values are recorded at the
end of each epoch only, so a train.max_steps that ends a run in its first epoch leaves none).
Exit status 3 (a guard stopped it, e.g. the loss exploded: train.explosion_factor) is
"diverged"; any other failure or a timeout is "failed", with its exit status and last stderr
line (all of its output is in its stdout.log and stderr.log). After a round, every param's range
shrinks around its values in the --top trials so far.

<out>/results.csv, best first, is rewritten after every trial: trial, round, status, the
metric's best and final value, the step of the best, one column per searched param, exit status
and error. Every trial also leaves <out>/trial-NNN/result.json.

SLURM job arrays run round 1 only (refining needs a whole round's results), one trial per task;
trial I draws from (seed, I) alone, as trial I of a local search does:

    sbatch --array=0-19 slurm/search_array.sbatch   # each task runs:
        python -m launch.search --space S --out O --array-task $SLURM_ARRAY_TASK_ID
    python -m launch.search --out O --collect        # afterwards: O/results.csv from the trials
"""
import argparse
import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy

from dist_nn import config as configuration
from dist_nn.config import ConfigError, tomllib  # tomllib, or tomli on Python 3.10
from dist_nn.monitor import read_records
from dist_nn.train import EXIT_CONFIG, EXIT_STOPPED
from . import mpirun

MARGIN = 0.1  # refined ranges reach this share of the previous range's width past the top trials
SHOWN = 5     # trials printed at the end


@dataclasses.dataclass(frozen=True)
class Param:
    """A searched key: a numeric range [low, high] (uniform, or uniform in log space) or choices."""
    name: str
    low: float = None
    high: float = None
    log: bool = False
    integer: bool = False
    choices: tuple = ()

    def draw(self, rng):
        if self.choices:
            return self.choices[rng.integers(len(self.choices))]
        value = float(self._unwarp(rng.uniform(self._warp(self.low), self._warp(self.high))))
        return round(value) if self.integer else value

    def around(self, values, original):
        """This range shrunk to the span of `values` (the top trials') plus a margin, inside
        `original`; choices: those among the values."""
        if self.choices:
            return dataclasses.replace(self, choices=tuple(c for c in self.choices if c in values))
        margin = MARGIN * (self._warp(self.high) - self._warp(self.low))
        low = self._unwarp(min(map(self._warp, values)) - margin)
        high = self._unwarp(max(map(self._warp, values)) + margin)
        return dataclasses.replace(self, low=max(low, original.low), high=min(high, original.high))

    def __str__(self):
        if self.choices:
            return f"{self.name} in {list(self.choices)}"
        return f"{self.name} in [{self.low:.4g}, {self.high:.4g}]{' log' if self.log else ''}"

    def _warp(self, value):
        return math.log(value) if self.log else value

    def _unwarp(self, value):
        return math.exp(value) if self.log else value


@dataclasses.dataclass
class Space:
    params: dict  # name -> Param
    fixed: dict   # name -> value, the same in every trial


def override(key, value):
    """`key=value` as the trainer parses it (JSON literals are TOML literals)."""
    return f"{key}={json.dumps(value)}"


def make_param(key, spec):
    """The Param of one [params] entry, or ConfigError saying what is wrong with it."""
    if not isinstance(spec, dict) or not spec or set(spec) - {"low", "high", "scale", "choices"}:
        raise ConfigError(f"{key}: give {{low = ..., high = ...[, scale = \"log\"]}} or "
                          f"{{choices = [...]}}, got {spec!r}")
    if "choices" in spec:
        choices = spec["choices"]
        if len(spec) > 1 or not isinstance(choices, list) or not choices:
            raise ConfigError(f"{key}: choices must be a non-empty list, on its own; got {spec!r}")
        return Param(key, choices=tuple(choices))
    low, high, scale = spec.get("low"), spec.get("high"), spec.get("scale", "linear")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"{key}: low and high must both be numbers, got {spec!r}")
    if scale not in ("linear", "log"):
        raise ConfigError(f"{key}: scale must be \"linear\" or \"log\", got {scale!r}")
    if low >= high:
        raise ConfigError(f"{key}: low ({low}) must be below high ({high})")
    if scale == "log" and low <= 0:
        raise ConfigError(f"{key}: a log scale needs low > 0, got {low}")
    return Param(key, low, high, log=scale == "log")


def parse_param(item):
    """(key, value) of a `--param KEY=VALUE`: a TOML value, else the text as a string."""
    key, equals, text = item.partition("=")
    if not equals:
        raise ConfigError(f"--param {item!r} must look like section.key=value")
    try:
        return key.strip(), tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), text.strip()


def load_space(path=None, items=()):
    """The search space of the TOML file at `path` and the `--param` items, validated."""
    document = {}
    if path:
        try:
            document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"cannot read the space {path}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None
    if set(document) - {"params", "fixed"} or not all(isinstance(table, dict)
                                                      for table in document.values()):
        raise ConfigError(f"{path}: a space has the tables [params] and [fixed], nothing else; "
                          f"got {sorted(document)}")
    specs, fixed = dict(document.get("params", {})), dict(document.get("fixed", {}))
    for key, value in map(parse_param, items):
        specs.pop(key, None)
        fixed.pop(key, None)
        (specs if isinstance(value, dict) else fixed)[key] = value
    if not specs:
        raise ConfigError("nothing to search: give --space FILE with [params] or "
                          "--param 'KEY={low=..., high=...}'")
    if "log.run_dir" in {*specs, *fixed}:
        raise ConfigError("log.run_dir is the search's: each trial runs in <out>/trial-NNN")
    params = {key: make_param(key, spec) for key, spec in specs.items()}
    return Space(checked_by_trainer(params, fixed), fixed)


def checked_by_trainer(params, fixed):
    """`params`, each extreme (each choice) loaded with the fixed values as the trainer loads
    them, so that its own validation names a bad key or value before any trial runs; integer
    keys (e.g. data.global_batch_size) get integer draws."""
    base = [override(key, value) for key, value in fixed.items()]
    sections = configuration.sections(configuration.load(None, base))
    checked = {}
    for name, param in params.items():
        for value in param.choices or (param.low, param.high):
            configuration.load(None, [*base, override(name, value)])
        section, _, key = name.partition(".")
        checked[name] = dataclasses.replace(
            param, integer=type(getattr(sections[section], key)) is int)
    return checked


def draw(params, seed, trial):
    """Trial `trial`'s values: from (seed, trial) alone, so an array task draws alike."""
    rng = numpy.random.default_rng([seed, trial])
    return {name: param.draw(rng) for name, param in params.items()}


def refine(original, current, best):
    """The next round's ranges: each shrunk around its values in the `best` trials."""
    if not best:  # nothing finished: nothing to move towards
        return current
    return {name: param.around([r["params"][name] for r in best], original[name])
            for name, param in current.items()}


def higher_is_better(metric):
    return metric.endswith("accuracy")


def score(run_dir, metric):
    """Best and final value of `metric` in run_dir/metrics.jsonl, and the step of the best;
    None where the run recorded none (e.g. it stopped before its first evaluation)."""
    split, key = metric.split("_", 1)
    try:
        records = [r for r in read_records(run_dir) if r["split"] == split]
    except FileNotFoundError:
        records = []
    if not records:
        return {"best": None, "final": None, "step": None}
    best = (max if higher_is_better(metric) else min)(records, key=lambda r: r[key])
    return {"best": best[key], "final": records[-1][key], "step": best["step"]}


def scored(result):
    return result["status"] == "ok" and result["best"] is not None


def ranked(results):
    """Best first: finished trials by their best value, then the others in trial order."""
    def key(r):
        if not scored(r):
            return (1, 0, r["trial"])
        return (0, -r["best"] if higher_is_better(r["metric"]) else r["best"], r["trial"])
    return sorted(results, key=key)


def last_line(path):
    """The last non-blank line of a trial's stderr, passing over the launcher's own report of
    the failure (MPICH's echo of an MPI_Abort, Open MPI's notices boxed in lines of dashes):
    the lines above it say why."""
    said, boxed = [], False
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and set(line) == {"-"}:  # a box's top or bottom border
            boxed = not boxed
        elif line and not boxed and "MPI_Abort" not in line:
            said.append(line)
    return said[-1] if said else ""


def run_trainer(overrides, run_dir, ranks=1, timeout=None):
    """Train with `overrides` on `ranks` local ranks, output in run_dir/{stdout,stderr}.log;
    (exit status, last stderr line); killed after `timeout` seconds."""
    argv = [sys.executable, "-m", "dist_nn.train", *overrides]
    with open(run_dir / "stdout.log", "wb") as out, open(run_dir / "stderr.log", "wb") as err:
        try:  # on timeout mpiexec is killed, and its proxy ends the ranks
            returncode = mpirun.run(ranks, argv, stdout=out, stderr=err, timeout=timeout).returncode
        except subprocess.TimeoutExpired:  # subprocess.run killed it
            return -signal.SIGKILL, f"timed out after {timeout:g} s"
    return returncode, last_line(run_dir / "stderr.log")


def run_trial(out, trial, round_, params, space, metric, runner):
    """Run one trial in out/trial-NNN with `runner` (run_trainer's signature); its result, also
    written to its result.json."""
    run_dir = out / f"trial-{trial:03d}"
    if run_dir.exists():  # a rerun (e.g. a requeued array task) must not append to old metrics
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    overrides = [override("log.run_dir", str(run_dir)), "log.plots=false", "log.tensorboard=off",
                 *(override(k, v) for k, v in {**space.fixed, **params}.items())]
    returncode, error = runner(overrides, run_dir)
    status = {0: "ok", EXIT_STOPPED: "diverged"}.get(returncode, "failed")
    result = {"trial": trial, "round": round_, "status": status, "exit": returncode,
              "error": error if status != "ok" else "", "params": params,
              "metric": metric, **score(run_dir, metric)}
    (run_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(describe(result), flush=True)
    return result


def search(space, out, trials, rounds, metric, seed, runner, top=3):
    """Rounds of `trials` random trials, each round's ranges shrunk around the `top` trials so
    far; the results, best first. results.csv is rewritten after every trial."""
    results, ranges = [], space.params
    for round_ in range(1, rounds + 1):
        if round_ > 1:
            ranges = refine(space.params, ranges, [r for r in ranked(results) if scored(r)][:top])
        print(f"round {round_}: " + "; ".join(map(str, ranges.values())), flush=True)
        for _ in range(trials):
            trial = len(results)
            results.append(run_trial(out, trial, round_, draw(ranges, seed, trial), space,
                                     metric, runner))
            write_csv(out, ranked(results))
    return ranked(results)


def collect(out, metric):
    """The results of every out/trial-*/result.json, scored by `metric`, best first, written to
    results.csv."""
    paths = sorted(out.glob("trial-*/result.json"))
    if not paths:
        raise ConfigError(f"no trial results (trial-*/result.json) under {out}")
    results = ranked([{**json.loads(path.read_text(encoding="utf-8")), "metric": metric,
                       **score(path.parent, metric)} for path in paths])
    write_csv(out, results)
    return results


def write_csv(out, results):
    """out/results.csv of `results` (in their order), replaced whole: an interruption never
    leaves half of it."""
    metric = results[0]["metric"]
    names = list(dict.fromkeys(name for r in results for name in r["params"]))
    partial_path = out / "results.csv.partial"
    with open(partial_path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["trial", "round", "status", f"{metric}_best", f"{metric}_final", "step",
                         *names, "exit", "error"])
        for r in results:
            writer.writerow([r["trial"], r["round"], r["status"], r["best"], r["final"],
                             r["step"], *(r["params"].get(name, "") for name in names),
                             r["exit"], r["error"]])
    os.replace(partial_path, out / "results.csv")


def describe(result):
    """One line: trial, status, scores, params (and why, for a trial that did not finish)."""
    def short(value):
        return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else value

    params = " ".join(f"{name}={short(value)}" for name, value in result["params"].items())
    line = (f"trial {result['trial']:3d} round {result['round']} {result['status']:8} "
            f"{result['metric']} best {short(result['best'])} final {short(result['final'])}  "
            f"{params}")
    return line + (f"  [exit {result['exit']}: {result['error']}]" if result["error"] else "")


def at_least(minimum, kind=int):
    def convert(text):
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value
    return convert


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m launch.search", description=__doc__,
        epilog="exit status: 0 the search ran (trials that failed or diverged are rows of "
               "results.csv); 2 a bad space, key or value (one message, before any trial)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", help="TOML file with [params] (searched) and [fixed]")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=SPEC",
                        help="searched (KEY={low=..., high=..., scale=\"log\"} or "
                             "KEY={choices=[...]}) or fixed (KEY=VALUE); wins over --space")
    parser.add_argument("--out", required=True, help="the search directory")
    parser.add_argument("--trials", type=at_least(1), default=8, help="trials per round")
    parser.add_argument("--rounds", type=at_least(1), default=2,
                        help="rounds; each after the first samples around the best so far")
    parser.add_argument("--top", type=at_least(1), default=3,
                        help="how many of the best trials the next round's ranges surround")
    parser.add_argument("--ranks", type=at_least(1), default=1, help="MPI ranks per trial")
    parser.add_argument("--metric", choices=configuration.METRICS, default="val_accuracy",
                        help="what ranks the trials (accuracies maximised, losses minimised)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=at_least(1, float),
                        help="seconds after which a trial is killed")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--array-task", type=at_least(0), metavar="I",
                      help="run only trial I of round 1 (a SLURM array task)")
    mode.add_argument("--collect", action="store_true",
                      help="gather the trials' result.json into results.csv; runs nothing")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    try:
        if args.collect:
            results = collect(out, args.metric)
        else:
            space = load_space(args.space, args.param)
            runner = partial(run_trainer, ranks=args.ranks, timeout=args.timeout)
            if args.array_task is not None:
                run_trial(out, args.array_task, 1, draw(space.params, args.seed, args.array_task),
                          space, args.metric, runner)
                return 0
            results = search(space, out, args.trials, args.rounds, args.metric, args.seed,
                             runner, args.top)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"\ntop {min(SHOWN, len(results))} of {len(results)} by {args.metric} "
          f"({out / 'results.csv'}):")
    for result in results[:SHOWN]:
        print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
