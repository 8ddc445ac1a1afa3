"""`python -m dist_nn.train [--config FILE.toml] [section.key=value ...] [--resume auto|PATH]
[--debug]`: config -> build -> loop. The same program runs as one process and under
`mpirun -n N`; only the communicator differs.

Every step each rank takes its share of the global batch and computes its share of the
global mean loss; backward starts the bucketed gradient allreduce; all ranks apply the same
optimizer step. Random draws depend only on (seed, rank, step or epoch) and a checkpoint holds
everything else, so a resumed run continues exactly where it stopped.
"""
import argparse
import contextlib
import math
import sys
import time

import numpy

from . import backend, checkpoint, config as configuration, models, nn
from . import dist as distributed
from .data import DataError, DistributedSampler, Loader, Subset, open_split
from .evaluate import evaluate
from .monitor import MetricsLog, Progress, plot_run
from .monitor.guards import DebugStatistics, ExplosionGuard, TrainingStopped, \
    initial_loss_warning, nonfinite_report
from .build import (data_path, freeze, has_split, make_augmenter, make_optimizer,
                    make_schedules, prepare_run_dir, transfer_weights)
from .checkpoint import restore
from .monitor.guards import gradient_check_report, write_debug_report

EXIT_CONFIG, EXIT_STOPPED = 2, 3
EXIT_REQUEUE = 75  # preempted after a checkpoint: the job script requeues (EX_TEMPFAIL)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m dist_nn.train",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("--config", help="a TOML file of config sections")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    parser.add_argument("--resume", help="`auto`: the newest valid checkpoint of log.run_dir; "
                                         "or a checkpoint file")
    parser.add_argument("--debug", action="store_true", help="gradient check of the model, "
                        "dead-ReLU and update/weight reports")
    return parser.parse_intermixed_args(argv)  # options may follow the overrides


def main(argv=None):
    args = parse_args(argv)
    try:
        config, error = configuration.load(args.config, args.overrides), None
        if args.resume == "auto" and not config.log.run_dir:
            raise configuration.ConfigError("--resume auto needs log.run_dir=... (the run to "
                                            "resume)")
    except configuration.ConfigError as failure:
        config, error = None, failure
    try:
        comm = distributed.setup(config.train.comm if config else "auto",
                                 config.train.device if config else "cpu",
                                 watchdog_s=config.train.watchdog_s if config else 0)
    except distributed.LaunchError as failure:  # every task alone: each says it
        print(f"error: {failure}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if error is not None:
            raise error
        return train(config, comm, args.resume, args.debug)
    except (configuration.ConfigError, DataError) as failure:  # alike on every rank: said once
        if comm.rank == 0:
            print(f"error: {failure}", file=sys.stderr)
        return EXIT_CONFIG
    except TrainingStopped as stop:
        if comm.rank == 0:
            print(f"stopped: {stop}", file=sys.stderr)
        return EXIT_STOPPED


def train(config, comm, resume=None, debug=False):
    say = print if comm.rank == 0 else (lambda *args, **kwargs: None)
    backend.use(dtype=config.train.dtype)
    run_dir = comm.bcast_obj(prepare_run_dir(config) if comm.rank == 0 else None)
    say(f"run directory: {run_dir}")
    say("\n".join(distributed.placement(comm)), flush=True)
    preemption = distributed.PreemptionSignal()

    # --- data -----------------------------------------------------------------------------
    path = data_path(config.data.path, comm)
    train_split = open_split(path, "train", comm)
    val_split = open_split(path, "val", comm) if has_split(path, "val") else None
    overfit = config.train.overfit_samples > 0
    if overfit:  # debugging: a tiny subset, no augmentation, to be learnt perfectly
        train_split = val_split = Subset(train_split, range(min(config.train.overfit_samples,
                                                                len(train_split))))
    configuration.check_metrics(config, has_val=val_split is not None)
    global_batch = config.data.batch_size * comm.size or config.data.global_batch_size
    micro = config.optim.accumulate
    loader = Loader(train_split, DistributedSampler(len(train_split), comm.rank, comm.size,
                                                    seed=config.train.seed),
                    global_batch, None if overfit else make_augmenter(config.augment,
                                                                      config.train.epochs),
                    config.train.seed, config.data.prefetch, drop_last=True,
                    cache_mb=config.data.cache_mb)
    steps_per_epoch = len(loader) // micro
    if steps_per_epoch == 0:
        raise configuration.ConfigError(
            f"the training split has {len(train_split)} samples, fewer than one step's "
            f"{global_batch * micro}: lower data.global_batch_size (or data.batch_size) or "
            "optim.accumulate")
    evaluation = val_split and Loader(val_split, DistributedSampler(
        len(val_split), comm.rank, comm.size, shuffle=False),
        max(comm.size, config.data.eval_batch_size * comm.size), cache_mb=config.data.cache_mb)

    # --- model, optimizer, schedules --------------------------------------------------------
    backend.seed(config.train.seed)
    model = models.from_config(config.model, train_split.sample_shape, train_split.num_classes,
                               comm)
    if config.model.init_from:
        say(transfer_weights(model, config.model.init_from))
    freeze(model, config.model.freeze)
    distributed.check_same_everywhere(model, comm, configuration.to_toml(config))
    distributed.broadcast_state(model, comm)
    nn.skip_input_grad(model)
    scale = global_batch * micro / config.optim.reference_batch if config.optim.scale_lr else 1
    opt = make_optimizer(config.optim, model.parameters(), config.optim.lr * scale)
    total_steps = config.train.epochs * steps_per_epoch
    if config.train.max_steps:
        total_steps = min(total_steps, config.train.max_steps)
    schedules, plateau = make_schedules(config.schedule, opt, steps_per_epoch, total_steps)
    sync = distributed.GradSync(model, opt.flat, comm, config.train.bucket_mb,
                                config.train.overlap, average=False)
    loss_fn = nn.SoftmaxCrossEntropy()
    guard = ExplosionGuard(config.train.explosion_factor)
    # position; best value of checkpoint.best_metric; early stopping's watched value and count
    state = {"epoch": 0, "batch": 0, "step": 0, "best": None, "watched": None, "stale": 0}
    if resume:
        where = restore(resume, run_dir, comm, model, opt, schedules, plateau, guard, state,
                        global_batch, micro, say)
        if where:
            say(f"resumed from {where} at epoch {state['epoch']}, step {state['step']}")
    if debug:
        say(gradient_check_report(config, model, train_split, loss_fn))
    statistics = DebugStatistics(model) if debug else None

    # --- records and checkpoints (rank 0) ---------------------------------------------------
    log = MetricsLog(run_dir, {"auto": "auto", "on": True, "off": False}[
        config.log.tensorboard]) if comm.rank == 0 else None
    started = time.perf_counter()

    def record(split, **values):
        if log is not None:
            log.write({"split": split, "epoch": state["epoch"], "step": state["step"],
                       "lr": opt.lr, "time": time.perf_counter() - started, **values})

    def save(name=None):
        if comm.rank != 0:
            return
        meta = {**state, "samples": state["batch"] * global_batch, "world_size": comm.size,
                "schedules": [s.state_dict() for s in schedules],
                "plateau": plateau.state_dict() if plateau else None,
                "guard": guard.state_dict(), "config": configuration.to_toml(config)}
        content = (model.state_dict(), opt.state_dict(), meta)
        try:
            if name is None:
                checkpoint.save_step(run_dir / "checkpoints", state["step"], *content,
                                     config.checkpoint.keep)
            else:
                checkpoint.write(run_dir / "checkpoints" / name, *content)
        except OSError as error:  # the previous checkpoints are untouched; try again later
            say(f"warning: could not write the checkpoint of step {state['step']} ({error}); "
                "the previous checkpoints are intact", flush=True)

    def validate():
        """Evaluate the validation split on all ranks and record it."""
        tick = time.perf_counter()
        seen = evaluate(model, evaluation.epoch_batches(0), loss_fn, comm)
        record("val", loss=seen["loss"], accuracy=seen["accuracy"],
               samples_per_s=seen["count"] / (time.perf_counter() - tick))
        return seen

    # --- the loop ------------------------------------------------------------------------------
    def out_of_steps():
        return bool(config.train.max_steps) and state["step"] >= config.train.max_steps

    try:
        while state["epoch"] < config.train.epochs and not out_of_steps():
            timing = dict.fromkeys(("data_wait", "compute", "allreduce_wait", "optimizer"), 0.0)
            epoch_sums, window_sums = numpy.zeros(3), numpy.zeros(3)  # loss, correct, count
            window_start = time.perf_counter()
            progress = Progress(steps_per_epoch, state["epoch"], enabled=comm.rank == 0)
            batches = loader.epoch_batches(state["epoch"], state["batch"])
            while state["batch"] < steps_per_epoch * micro and not out_of_steps():
                backend.seed(config.train.seed, comm.rank, state["step"])  # dropout masks
                if statistics is not None:
                    statistics.active = state["step"] % config.log.debug_every == 0
                    statistics.before_step()
                opt.zero_grad()
                local = numpy.zeros(4)  # loss, correct, samples, preemption requested
                for m in range(micro):
                    tick = time.perf_counter()
                    batch = next(batches)
                    timing["data_wait"] += time.perf_counter() - tick
                    tick = time.perf_counter()
                    with sync.no_sync() if m < micro - 1 else contextlib.nullcontext():
                        logits = model.forward(batch.x)
                        local[0] += float(loss_fn.forward(logits, batch.y,
                                                          mean_over=global_batch * micro))
                        model.backward(loss_fn.backward())
                    local[1] += int((logits.argmax(axis=1) == batch.y).sum())
                    local[2] += len(batch.y)
                    timing["compute"] += time.perf_counter() - tick
                tick = time.perf_counter()
                sync.wait()
                local[3] = preemption.received is not None
                comm.allreduce(local)  # every rank learns of a signal on any rank
                timing["allreduce_wait"] += time.perf_counter() - tick
                check_step(local[0], model, batch.x, opt, guard, state, comm, say,
                           train_split.num_classes)
                tick = time.perf_counter()
                opt.step()
                for schedule in schedules:
                    schedule.step()
                timing["optimizer"] += time.perf_counter() - tick
                state["step"] += 1
                state["batch"] += micro
                sums = numpy.array([local[0] * local[2], local[1], local[2]])
                epoch_sums += sums
                window_sums += sums
                if statistics is not None and statistics.active and comm.rank == 0:
                    write_debug_report(run_dir, state["step"], statistics)
                if state["step"] % config.log.every_steps == 0:
                    rate = window_sums[2] / (time.perf_counter() - window_start)
                    values = {"loss": window_sums[0] / window_sums[2],
                              "accuracy": window_sums[1] / window_sums[2], "samples_per_s": rate}
                    record("train", **values)
                    progress.update(state["batch"] // micro, **values, lr=opt.lr)
                    window_sums, window_start = numpy.zeros(3), time.perf_counter()
                every = config.checkpoint.every_steps
                if local[3]:  # all ranks stop after the same step
                    save()
                    say(f"preempted ({preemption.received or 'signal on another rank'}): "
                        f"checkpoint of step {state['step']} written; exiting with "
                        f"{EXIT_REQUEUE} for the job script to requeue", flush=True)
                    return EXIT_REQUEUE
                if every and state["step"] % every == 0:
                    save()
            progress.close()
            if state["batch"] < steps_per_epoch * micro:  # the step budget ended the run
                if evaluation:
                    validate()
                break
            metrics = {"train_loss": epoch_sums[0] / epoch_sums[2],
                       "train_accuracy": epoch_sums[1] / epoch_sums[2]}
            record("train", scope="epoch", loss=metrics["train_loss"],
                   accuracy=metrics["train_accuracy"],
                   samples_per_s=epoch_sums[2] / max(sum(timing.values()), 1e-9), **timing)
            if evaluation:
                seen = validate()
                metrics.update(val_loss=seen["loss"], val_accuracy=seen["accuracy"])
                say(f"epoch {state['epoch']}: val loss {seen['loss']:.4f} "
                    f"accuracy {seen['accuracy']:.4f}", flush=True)
            state["epoch"] += 1
            state["batch"] = 0
            if plateau is not None:
                plateau.step(metrics[config.schedule.plateau_metric])
            improved = track_best(config, state, metrics)
            save()
            if improved and config.checkpoint.keep_best:
                save(checkpoint.BEST)
            if overfit and metrics.get("val_accuracy") == 1.0:
                say(f"overfit: 100% training accuracy on {len(train_split)} samples after "
                    f"{state['epoch']} epochs")
                break
            patience = config.train.early_stopping_patience
            if patience and state["stale"] >= patience:
                say(f"early stopping: {config.train.early_stopping_metric} has not improved "
                    f"for {patience} epochs")
                break
        else:
            if overfit:
                raise TrainingStopped(f"could not overfit {len(train_split)} samples in "
                                      f"{config.train.epochs} epochs: check the model and the "
                                      "learning rate")
    finally:
        if log is not None:
            log.close()
    if out_of_steps():
        save()
    if comm.rank == 0 and config.log.plots:
        try:
            say("plots: " + ", ".join(str(p) for p in plot_run(run_dir)))
        except RuntimeError as error:
            say(f"warning: no plots: {error}")
    say(f"done: {state['step']} steps, {state['epoch']} epochs; run directory {run_dir}")
    return 0


def check_step(loss, model, x, opt, guard, state, comm, say, num_classes):
    """Stop the run, on every rank alike, when the global loss or the gradients went NaN/Inf
    (naming the first layer that produced them) or the loss exploded."""
    if not (math.isfinite(loss) and math.isfinite(float(opt.flat.grad.sum()))):
        raise TrainingStopped(comm.bcast_obj(nonfinite_report(model, x, state["step"])))
    if state["step"] == 0 and guard.initial is None:
        warning = initial_loss_warning(loss, num_classes)
        if warning:
            say(warning, flush=True)
    guard.check(loss, state["step"], opt.lr)


def track_best(config, state, metrics):
    """Update the best value of checkpoint.best_metric and the early-stopping count; True
    when this epoch is the best so far."""
    def better(value, reference, metric, delta=0.0):
        if reference is None:
            return True
        return value < reference - delta if metric.endswith("loss") else value > reference + delta

    best_metric = config.checkpoint.best_metric
    improved = better(metrics[best_metric], state["best"], best_metric)
    if improved:
        state["best"] = metrics[best_metric]
    watched = config.train.early_stopping_metric
    if better(metrics[watched], state["watched"], watched, config.train.early_stopping_min_delta):
        state["watched"], state["stale"] = metrics[watched], 0
    else:
        state["stale"] += 1
    return improved


if __name__ == "__main__":
    sys.exit(main())
