"""The Trainer: config -> build -> loop, for `python -m dist_nn.train` and for scripts.

    from dist_nn import Trainer
    result = Trainer("run.toml", ["optim.lr=0.1"]).fit()   # the same script runs on N ranks

Every step each rank takes its share of the global batch and computes its share of the
global mean loss; backward starts the bucketed gradient allreduce; all ranks apply the same
optimizer step. Random draws depend only on (seed, rank, step or epoch) and a checkpoint holds
everything else, so a resumed run continues exactly where it stopped. Every decision that
ends a run is taken alike on every rank: errors are raised on all of them, and signals are
agreed through the per-step allreduce.
"""
import contextlib
import math
import time

from . import backend, checkpoint, config as configuration, distributed, models, nn, optim
from . import run_dir, saved, signals
from .build import (data_path, freeze, has_split, make_augmenter, make_optimizer_and_sync,
                    make_schedules, transfer_weights)
from .data import DistributedSampler, Loader, Subset, open_split
from .evaluate import evaluate
from .monitor import MetricsLog, Progress, plot_run, plural
from .monitor.guards import (DebugStatistics, ExplosionGuard, TrainingStopped,
                             gradient_check_report, initial_loss_warning, nonfinite_report,
                             write_debug_report)
from .monitor.ranks import RANK_TIMES, RankTimes
from .resume import resumed_config
from .run_state import TIMES, Position, RunningTotals, StepTotals, Watch
from .signals import EXIT_PREEMPTED, PreemptionSignal

# fp16-compressed steps skipped in a row before the run stops: by then a bucket's scale has
# backed off (16-fold a step) to its floor, 2^-24, and the sum still overflows
OVERFLOW_STREAK = 8
COMPRESSION_KEYS = ("grad_compression", "powersgd_rank", "bucket_mb")  # what its state fits
EXIT_CONFIG, EXIT_STOPPED = 2, 3
EXIT_UNSAVED = 4  # finished or stopped, but the checkpoint of the step reached is lost


class StoppedBySignal(SystemExit):
    """The run stopped after writing a checkpoint because a rank received a stop signal; its
    code is the exit status: 75 preempted (SIGUSR1, SIGTERM: for the job script to requeue),
    130 interrupted (SIGINT, Ctrl-C). Uncaught, the process exits with it."""


class CheckpointLost(SystemExit):
    """The run finished, or a signal stopped it, but the checkpoint of the step reached could
    not be written (a full disk): exit 4, never 0 (the final checkpoint is on disk) nor 75/130
    (a restart loses nothing). `message` says what failed and the newest checkpoint on disk."""

    def __init__(self, message):
        super().__init__(EXIT_UNSAVED)
        self.message = message


def newest_on_disk(on_disk):
    return f"the newest checkpoint on disk is {on_disk['path']}" if on_disk["path"] else \
        "no checkpoint of this run is on disk"


class Trainer:
    """A training run. `config`: a TOML path, a `config.Config` or None (the defaults);
    `overrides`: dotted `section.key=value` strings applied on top; `model`: an nn.Module
    built by the caller, used instead of `model.name` (checkpoints then hold its weights, and
    rebuilding it for evaluation is the caller's business). `resume`: "auto" or a
    checkpoint path; `debug`: gradient check and dead-ReLU/update reports; `comm`: a
    communicator (default: set up from the config, MPI when launched under mpiexec)."""

    def __init__(self, config=None, overrides=(), model=None, *, resume=None, debug=False,
                 comm=None):
        self.resumed = None  # the checkpoint --resume found (read before MPI), or None
        if isinstance(config, configuration.Config):  # complete: nothing comes from a checkpoint
            config = configuration.loads(configuration.to_toml(config), overrides,
                                         resume=resume)
        elif resume:
            config, self.resumed = resumed_config(config, overrides, resume)
        else:
            config = configuration.load(config, overrides)
        self.config, self.given_model, self.resume, self.debug = config, model, resume, debug
        self.preemption = PreemptionSignal()  # before MPI's start-up: kept
        self.comm = comm or distributed.setup(config.train.comm, config.train.device,
                                              config.train.cuda_aware,
                                              watchdog_s=config.train.watchdog_s)
        self.say = print if self.comm.rank == 0 else (lambda *args, **kwargs: None)
        self.metrics, self.log, self.run_dir, self.deadline = {}, None, None, None
        # rank 0: the newest checkpoint on disk (its step and path) and the last write error
        self.on_disk = {"step": None, "path": None, "error": None}

    # --- the run ---------------------------------------------------------------------------
    def fit(self):
        """Train to the end (epochs, max_steps, early stopping); returns a summary dict with
        run_dir, step, epoch, train_loss/train_accuracy and, with a validation split,
        val_loss/val_accuracy. Raises ConfigError/DataError (bad input; DataReadError: a read
        that failed on this rank only), TrainingStopped (a guard), StoppedBySignal (a signal,
        after a checkpoint) or CheckpointLost (finished or stopped, but the checkpoint of
        the step reached is not on disk)."""
        watchdog_s = self.config.train.watchdog_s
        self.deadline = distributed.StartupDeadline(self.comm, watchdog_s, self.preemption) \
            if watchdog_s else None
        try:
            self.build()
            self.restore()
            if self.comm.rank == 0:  # accepted: the run directory records this start
                self.run_dir.record_start(self.config, self.resumed and self.resumed.path,
                                          self.resumed and self.resumed.run_id, warn=self.say)
            self.log = self.open_metrics_log()
            self.stop_if_signalled()  # one that came during start-up: before a step
            self.starting(None)  # started: from here on the watchdog times the collectives
            while not self.done():
                self.train_epoch()
            self.finish()
        finally:  # also after an error: the directory is free for the next run at once
            self.starting(None)
            if self.log is not None:
                self.log.close()
            if self.run_dir is not None:
                self.run_dir.release()
        return {"run_dir": str(self.run_dir.path), "step": self.position.step,
                "epoch": self.position.epoch, **self.metrics}

    def done(self):
        """True once the loop is over: its epochs, its step budget, early stopping (counted
        in the saved state: a resumed run that had stopped stays stopped), or an overfit
        reached."""
        c = self.config.train
        patience = c.early_stopping_patience
        return self.position.epoch >= c.epochs or self.out_of_steps() or self.overfitted or \
            bool(patience) and self.early_stopping.stale >= patience

    def out_of_steps(self):
        return bool(self.config.train.max_steps) and \
            self.position.step >= self.config.train.max_steps

    def starting(self, phase):
        """Say what start-up is doing (for the start-up deadline's message); None: done."""
        if self.deadline is None:
            return
        if phase is None:
            self.deadline.cancel()
        else:
            self.deadline.phase = phase

    # --- building ----------------------------------------------------------------------------
    def build(self):
        self.starting("claiming the run directory")
        backend.use(dtype=self.config.train.dtype)
        configuration.check_world_size(self.config, self.comm.size)
        self.run_dir = run_dir.claim(self.config, self.comm, self.resume,
                                     self.resumed and self.resumed.run_id,
                                     warn=self.say)
        self.config.log.run_dir = str(self.run_dir.path)  # recorded: resume finds it
        self.say(f"run directory: {self.run_dir.path}")
        self.say("\n".join(distributed.placement(self.comm)), flush=True)
        self.starting(f"opening the data ({self.config.data.path})")
        self.build_data()
        self.starting("building the model")
        self.build_model()
        self.build_optimizer()
        c = self.config
        self.position = Position(self.global_batch, self.accumulate)
        self.best = Watch(c.checkpoint.best_metric)  # for best.h5
        self.early_stopping = Watch(c.train.early_stopping_metric,
                                    c.train.early_stopping_min_delta)
        self.epoch_totals = RunningTotals()  # saved: a resumed epoch is reported whole
        # who is slow: gathered every logged step, unless on one rank or turned off
        self.rank_times = RankTimes(c.log.straggler_threshold) \
            if self.comm.size > 1 and c.log.straggler_threshold else None
        self.overfitted = False
        self.started = time.perf_counter()

    def open_metrics_log(self):
        """Rank 0's metrics log (None on the other ranks); log.tensorboard = "on" without the
        tensorboard package is a ConfigError on every rank."""
        log, error = None, None
        if self.comm.rank == 0:
            try:
                log = MetricsLog(self.run_dir.path, {"auto": "auto", "on": True, "off": False}[
                    self.config.log.tensorboard], warn=self.say)
            except ImportError as failure:
                error = f"log.tensorboard = \"on\" needs the tensorboard package ({failure}): " \
                    "pip install tensorboard, or set log.tensorboard = \"auto\""
        distributed.raise_together(self.comm, error, configuration.ConfigError)
        return log

    def build_data(self):
        c, comm = self.config, self.comm
        path = data_path(c.data.path, comm)
        self.train_split = open_split(path, "train", comm)
        self.val_split = open_split(path, "val", comm) if has_split(path, "val") else None
        self.overfit = c.train.overfit_samples > 0
        if self.overfit:  # debugging: a tiny subset, no augmentation, to be learnt perfectly
            self.train_split = self.val_split = Subset(self.train_split, range(
                min(c.train.overfit_samples, len(self.train_split))))
        notice = configuration.fall_back_to_train_metrics(c, self.val_split is not None)
        if notice:  # val metrics watched by default, but no val split: training twins
            self.say(notice)
        self.global_batch = c.data.batch_size * comm.size or c.data.global_batch_size
        self.accumulate = c.optim.accumulate  # micro-batches of global_batch per step
        self.loader = Loader(
            self.train_split, DistributedSampler(
                len(self.train_split), comm.rank, comm.size, seed=c.train.seed,
                order=self.training_order(), window=c.data.shuffle_window,
                chunks=None if self.overfit else self.train_split.chunks()),
            self.global_batch, None if self.overfit else make_augmenter(
                c.augment, c.train.epochs, self.train_split.sample_shape),
            c.train.seed, c.data.prefetch, drop_last=True, cache_mb=c.data.cache_mb,
            read_ahead_mb=c.data.read_ahead_mb, comm=comm)
        self.steps_per_epoch = len(self.loader) // self.accumulate
        if self.steps_per_epoch == 0:
            raise configuration.ConfigError(
                f"the training split has {len(self.train_split)} samples, fewer than one "
                f"step's {self.global_batch * self.accumulate}: lower data.global_batch_size (or "
                "data.batch_size) or optim.accumulate")
        if self.loader.cached and comm.local_size > 1 and not self.train_split.shared:
            self.say(f"notice: the ranks of this node cannot share memory (/dev/shm too small "
                     f"for the {self.train_split.nbytes / 2**20:.0f} MiB split, or no MPI-3 "
                     "shared windows): each rank caches its own copy")
        self.val_loader = self.val_split and Loader(
            self.val_split, DistributedSampler(len(self.val_split), comm.rank, comm.size,
                                               shuffle=False),
            max(comm.size, c.data.eval_batch_size * comm.size), cache_mb=c.data.cache_mb,
            read_ahead_mb=c.data.read_ahead_mb, comm=comm)

    def training_order(self):
        """data.order, with "auto" resolved (said once): chunks when the training split does
        not fit data.cache_mb (a shuffled epoch then reads each chunk whole, once)."""
        order, data = self.config.data.order, self.config.data
        if self.overfit:
            return "exact"
        if order == "auto":
            fits = self.train_split.nbytes <= data.cache_mb * 2**20
            order = "exact" if fits else "chunks"
            if not fits:
                self.say(f"notice: the training split ({self.train_split.nbytes / 2**20:.0f} "
                         f"MiB) does not fit data.cache_mb = {data.cache_mb}: data.order = "
                         f"\"chunks\" (chunks in random order, samples shuffled within "
                         f"{data.shuffle_window} chunks; data.order = \"exact\" keeps a "
                         "uniform permutation, read more slowly)")
        return order

    def build_model(self):
        c, comm, split = self.config, self.comm, self.train_split
        backend.seed(c.train.seed)
        error = None
        try:
            if self.given_model is None:
                self.model = models.from_config(c.model, split.sample_shape, split.num_classes,
                                                comm)
            else:
                self.model = models.check_fits(self.given_model, split.sample_shape,
                                               split.num_classes, "given to Trainer")
        except models.ModelError as failure:
            error = failure
        # a builder that fails on one rank only: every rank says it, with that rank's number
        distributed.raise_together(comm, error, configuration.ConfigError)
        self.check_activations_fit(self.model.kept_bytes() / models.PROBE)
        if c.model.init_from:
            self.say(transfer_weights(self.model, c.model.init_from))
        freeze(self.model, c.model.freeze)
        try:
            distributed.check_same_everywhere(self.model, comm, configuration.to_toml(c))
            distributed.broadcast_state(self.model, comm)
            if comm.size > 1:  # the same names and shapes, now the same function
                distributed.check_same_computation(self.model, comm, split.sample_shape,
                                                   c.train.seed)
        except distributed.ReplicasDiffer as differ:  # alike on every rank
            raise configuration.ConfigError(str(differ)) from None
        nn.skip_input_grad(self.model)
        self.loss_fn = nn.SoftmaxCrossEntropy(label_smoothing=c.train.label_smoothing)
        self.val_loss_fn = nn.SoftmaxCrossEntropy()  # validation losses stay comparable
        # fresh weights give ln C; transferred ones may start far below it
        self.guard = ExplosionGuard(c.train.explosion_factor,
                                    floor=math.log(split.num_classes))
        self.statistics = DebugStatistics(self.model) if self.debug else None

    def check_activations_fit(self, bytes_per_sample):
        """ConfigError when a step's micro-batch would keep more activations for backward than
        the free memory holds (twice: backward's temporaries), said before it is tried."""
        batch = -(-self.global_batch // self.comm.size)
        need, free = 2 * bytes_per_sample * batch, backend.free_memory()
        if need > free:
            raise configuration.ConfigError(
                f"a batch of {batch} samples per rank keeps about {need / 2**30:.1f} GiB of "
                f"activations for backward, more than the {free / 2**30:.1f} "
                "GiB free: lower data.global_batch_size (or data.batch_size; optim.accumulate "
                "keeps the step's size), or make the model smaller")

    def build_optimizer(self):
        c = self.config
        scale = self.global_batch * self.accumulate / c.optim.reference_batch \
            if c.optim.scale_lr else 1
        # optim.shard: ZeRO-1's pair, each rank keeping the optimizer state of its shard
        self.opt, self.sync = make_optimizer_and_sync(c, self.model, self.comm,
                                                      c.optim.lr * scale)
        total_steps = c.train.epochs * self.steps_per_epoch
        if c.train.max_steps:
            total_steps = min(total_steps, c.train.max_steps)
        self.schedules, self.plateau = make_schedules(c.schedule, self.opt,
                                                      self.steps_per_epoch, total_steps)
        try:  # mixed precision, clipping, EMA around each optimizer step
            self.recipe = optim.StepRecipe(self.model, self.opt, c.train.amp,
                                           c.optim.clip_grad_norm, c.train.ema_decay,
                                           self.sync.squared_grad_norm,
                                           skip_overflow=c.train.grad_compression == "fp16")
        except nn.amp.PrecisionError as error:
            raise configuration.ConfigError(f"train.amp = {c.train.amp!r}: {error}") from None

    def restore(self):
        """Continue from the checkpoint --resume found, then the --debug report."""
        self.starting("restoring the checkpoint")
        if self.resume:
            self.resume_checkpoint()
        self.start_step = self.position.step  # a stop before it loses nothing
        if self.debug:
            self.starting("checking the gradients (--debug)")
            if self.given_model is not None:
                self.say("--debug: no gradient check of a model given to Trainer (it is "
                         "checked on a float64 twin built from model.name)")
            else:
                self.say(gradient_check_report(self.config, self.model, self.train_split,
                                               self.loss_fn))

    def resume_checkpoint(self):
        """Load the checkpoint every rank chose before MPI (the same one, or a ConfigError on
        every rank) and say what differs from its recorded config."""
        resumed = self.resumed
        chosen = self.comm.allgather_obj(resumed and resumed.path)
        if len(set(chosen)) > 1:
            raise configuration.ConfigError(
                f"the ranks found different checkpoints to resume "
                f"({sorted(set(map(str, chosen)))}): the run directory must be on a file "
                "system every rank sees alike")
        if resumed is None:
            self.say("no valid checkpoint in the run directory: starting from scratch")
            return
        for warning in resumed.warnings:
            self.say(warning)
        self.load_checkpoint(resumed.path, resumed.contents)
        self.resumed.contents = None  # the arrays are in the model now
        if checkpoint.lies_in(resumed.path, self.run_dir.checkpoints):
            self.on_disk.update(step=self.position.step, path=resumed.path)
        self.say(f"resumed from {resumed.path} at epoch {self.position.epoch}, step "
                 f"{self.position.step}")

    def load_checkpoint(self, path, contents):
        """Load the model, the optimizer and the run's state from `contents` (read from
        `path`), on every rank; ConfigError when it cannot be used. The optimizer's
        hyper-parameters and the schedules' base values stay this config's: the values that
        differ from the checkpoint's recorded config take effect (and are said)."""
        try:
            model_state, optimizer_state, meta = contents
            checkpoint.check_meta(meta, path)
            if optimizer_state is None:
                raise checkpoint.CheckpointError(f"{path} holds no optimizer state")
            self.model.load_state_dict(model_state)
            configured = {name: getattr(self.opt, name) for name in self.opt.hyperparameters}
            self.opt.load_state_dict(optimizer_state)
            for name, value in configured.items():
                setattr(self.opt, name, value)
            self.load_state_dict(meta["trainer"], contents.ema)
            if optimizer_state["step"] > self.position.step:  # skipped steps make it less
                raise ValueError(f"the optimizer is at step {optimizer_state['step']} but the "
                                 f"run is at step {self.position.step}")
            self.load_compression(contents.compression, meta["config"], meta["world_size"])
        except (checkpoint.CheckpointError, ValueError, KeyError, TypeError) as error:
            raise configuration.ConfigError(f"cannot resume from {path}: {error}") from None
        differences = configuration.changes(meta["config"], self.config)
        if differences:
            self.say(f"resuming with values that differ from the checkpoint's config; they "
                     f"take effect: {differences}", flush=True)

    def load_compression(self, arrays, recorded_config, world_size):
        """Gradient compression's state (PowerSGD's Q and error feedback, fp16's scales) from
        a checkpoint written with the same compression and buckets; another compression, or
        none saved (a 1-rank run), starts afresh. Errors written by another number of ranks
        restart from zero."""
        compression, train = self.sync.compression, self.config.train
        recorded = configuration.tomllib.loads(recorded_config).get("train", {})
        same = tuple(recorded.get(key) for key in COMPRESSION_KEYS) == \
            tuple(getattr(train, key) for key in COMPRESSION_KEYS)
        if compression is None or not same or arrays is None:
            return
        if not compression.load_state_dict(arrays, self.comm):
            self.say(f"notice: PowerSGD's error feedback starts from zero: the checkpoint was "
                     f"written by {world_size} ranks, this run has {self.comm.size}")

    def state_dict(self):
        """The run's state beside the model's and the optimizer's arrays: each part's own
        state_dict() under its name, JSON-able (a checkpoint's meta "trainer")."""
        return {"position": self.position.state_dict(), "best": self.best.state_dict(),
                "early_stopping": self.early_stopping.state_dict(),
                "epoch_totals": self.epoch_totals.state_dict(),
                "schedules": [schedule.state_dict() for schedule in self.schedules],
                "plateau": self.plateau.state_dict() if self.plateau else None,
                "guard": self.guard.state_dict(), "recipe": self.recipe.state_dict()}

    def load_state_dict(self, state, ema_state=None):
        """Load a state_dict() (and the EMA's averaged weights), each part checking what it
        is given; ValueError when the state is malformed or lies beyond this run's end."""
        state = saved.checked(state, "trainer", position=saved.OBJECT, best=saved.OBJECT,
                              early_stopping=saved.OBJECT, epoch_totals=saved.OBJECT,
                              schedules=saved.OBJECTS,
                              plateau=saved.OBJECT_OR_NONE, guard=saved.OBJECT,
                              recipe=saved.OBJECT)
        position, end = self.position, self.config.train
        position.load_state_dict(state["position"])
        if position.epoch > end.epochs or (end.max_steps and position.step > end.max_steps):
            raise ValueError(f"the saved run is at epoch {position.epoch}, step "
                             f"{position.step}, beyond this run's end (train.epochs = "
                             f"{end.epochs}, train.max_steps = {end.max_steps}): raise them to "
                             "continue it, or start a new run")
        if position.steps_in_epoch > self.steps_per_epoch:
            raise ValueError(f"position: {state['position']['samples']} samples into epoch "
                             f"{position.epoch}, beyond its {self.steps_per_epoch} steps")
        for i, schedule_state in enumerate(state["schedules"]):  # each steps once a step
            if isinstance(schedule_state, dict) and schedule_state.get("t") != position.step:
                raise ValueError(f"schedule {i} is at t = {str(schedule_state.get('t'))[:40]}"
                                 f" but the run is at step {position.step}")
        self.best.load_state_dict(state["best"], "best")
        self.early_stopping.load_state_dict(state["early_stopping"], "early_stopping")
        self.epoch_totals.load_state_dict(state["epoch_totals"])
        for schedule, schedule_state in zip(self.schedules, state["schedules"]):
            schedule.load_state_dict(schedule_state)
        if self.plateau is not None and state["plateau"]:
            self.plateau.load_state_dict(state["plateau"])
        self.guard.load_state_dict(state["guard"])
        self.recipe.load_state_dict(state["recipe"], ema_state)

    # --- one epoch, one step -------------------------------------------------------------------
    def train_epoch(self):
        """Train the rest of the current epoch (or up to the step budget), then validate,
        checkpoint and decide on early stopping."""
        self.open_window()
        position = self.position
        self.progress = Progress(self.steps_per_epoch, position.epoch,
                                 enabled=self.comm.rank == 0,
                                 first_step=position.step - position.steps_in_epoch)
        batches = self.loader.epoch_batches(position.epoch, position.micro_batches)
        while position.steps_in_epoch < self.steps_per_epoch and not self.out_of_steps():
            self.step(batches)
        self.progress.close()
        if position.steps_in_epoch < self.steps_per_epoch:  # the step budget ran out
            if self.val_loader:
                self.validate(f"step {position.step} (train.max_steps)")
            return
        self.end_epoch()

    def step(self, batches):
        """One optimizer step of optim.accumulate micro-batches, its checks and records."""
        c, position, timing = self.config, self.position, dict.fromkeys(TIMES, 0.0)
        backend.seed(c.train.seed, self.comm.rank, position.step)  # dropout masks
        if self.statistics is not None:
            self.statistics.active = position.step % c.log.debug_every == 0
            self.statistics.before_step()
        self.opt.zero_grad()
        totals = StepTotals()  # this rank's part
        loss = correct = 0  # on the device until the step's one read below
        for m in range(self.accumulate):
            tick = time.perf_counter()
            batch = next(batches)
            timing["data_wait"] += time.perf_counter() - tick
            tick = time.perf_counter()
            last = m == self.accumulate - 1
            with contextlib.nullcontext() if last else self.sync.no_sync(), \
                    self.recipe.autocast():
                logits = self.model.forward(batch.x)
                loss = loss + self.loss_fn.forward(  # labels: checked when the data opened
                    logits, batch.y, mean_over=self.global_batch * self.accumulate,
                    check_labels=False)
                self.model.backward(self.recipe.scale(self.loss_fn.backward()))
            correct = correct + (logits.argmax(axis=1) == batch.y).sum()
            totals.samples += len(batch.y)
            timing["compute"] += time.perf_counter() - tick
        tick = time.perf_counter()
        self.sync.wait()
        timing["allreduce_wait"] += time.perf_counter() - tick
        self.recipe.unscale(defer=True)  # fp16: unscaled; the gradient norm, once
        # the step's one host sync on a GPU: loss, accuracy and the norm in one copy
        totals.loss, totals.correct, squared_norm = backend.read(
            loss, correct, self.recipe.pending_norm)
        self.recipe.conclude(squared_norm)  # fp16: an overflow skips the step
        tick = time.perf_counter()
        totals.preempt_votes, totals.interrupt_votes = self.preemption.votes()
        totals = totals.reduced(self.comm)  # every rank learns of a signal on any rank
        timing["allreduce_wait"] += time.perf_counter() - tick
        self.check_step(totals.loss, batch.x)
        tick = time.perf_counter()
        grad_norm = self.recipe.step()  # clipped, stepped (unless skipped), EMA updated
        for schedule in self.schedules:
            schedule.step()
        timing["optimizer"] += time.perf_counter() - tick
        position.step += 1
        position.micro_batches += self.accumulate
        self.account(totals, grad_norm, timing)
        stop = self.preemption.exit_code((totals.preempt_votes, totals.interrupt_votes))
        if stop:  # all ranks stop after the same step
            self.stop_for_signal(stop)
        every = c.checkpoint.every_steps
        if every and position.step % every == 0:
            self.save()

    def check_step(self, loss, x):
        """Stop the run, on every rank alike, when the global loss or the gradients went
        NaN/Inf (naming the first layer that produced them) or the loss diverges. Steps are
        numbered as the records number them: the first step is step 1. Under fp16 an
        overflow of the scaled gradients (no gradient norm) skips the step instead (the loss
        scaler's rule); so does an fp16-compressed sum that overflows, until OVERFLOW_STREAK
        steps in a row (its scale then at the floor, the next would overflow too)."""
        step = self.position.step + 1
        grad_norm = self.recipe.grad_norm
        if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
            with self.recipe.autocast():  # in the precision that produced it
                report = nonfinite_report(self.model, x, step)
            raise TrainingStopped(self.comm.bcast_obj(report))
        if self.recipe.scaler is None and self.recipe.overflow_streak >= OVERFLOW_STREAK:
            raise TrainingStopped(
                f"the synchronised gradient overflowed float16 (train.grad_compression"
                f" = \"fp16\") in {OVERFLOW_STREAK} steps in a row, up to step {step}, each "
                "skipped: use train.grad_compression = \"bf16\" (float32's range)")
        if step == 1 and not self.config.model.init_from and not self.resume:
            warning = initial_loss_warning(loss, self.train_split.num_classes)
            if warning:
                self.say(warning, flush=True)
        self.guard.check(loss, step, self.opt.lr)

    def account(self, totals, grad_norm, timing):
        """Add a step's totals, gradient norm (None: a skipped step) and time split to the
        epoch's and the log window's; write the training record (with every rank's times)
        and the --debug report when due."""
        taken = RunningTotals.of_step(totals, grad_norm, timing)
        self.epoch_totals += taken
        self.window_totals += taken
        step = self.position.step
        if self.statistics is not None and self.statistics.active and self.comm.rank == 0:
            write_debug_report(self.run_dir.path, step, self.statistics)
        if step % self.config.log.every_steps == 0:
            window = self.window_totals
            values = {"loss": window.mean("loss"), "accuracy": window.mean("correct"),
                      "samples_per_s": window.samples / (time.perf_counter() -
                                                         self.window_start)}
            scaler = self.recipe.scaler
            self.record("train", **values, grad_norm=window.mean_grad_norm(),
                        **({"loss_scale": scaler.scale} if scaler else {}),
                        **({"skipped_steps": self.recipe.skipped}
                           if self.recipe.skip_overflow else {}),
                        **self.gather_rank_times(window))
            self.progress.update(self.position.steps_in_epoch, **values, lr=self.opt.lr)
            self.open_window()

    def open_window(self):
        """Start a log window: its totals, start time and first step."""
        self.window_totals, self.window_start = RunningTotals(), time.perf_counter()
        self.window_step = self.position.step

    def gather_rank_times(self, window):
        """Every rank's compute, data wait and collective wait per step over the log window,
        in one small collective on every rank: rank 0's record fields (and a straggler said
        when one appears); {} on the other ranks, on one rank, or with the report off."""
        if self.rank_times is None:
            return {}
        steps = self.position.step - self.window_step
        rows = self.comm.allgather_obj([getattr(window, name) / steps
                                        for name in RANK_TIMES.values()])
        if self.comm.rank != 0:
            return {}
        fields = self.rank_times.fields(rows)
        news = self.rank_times.news(fields)
        if news:
            self.say(news, flush=True)
        return fields

    def stop_if_signalled(self):
        """Stop now, on every rank alike, if any rank received a stop signal (the steps
        decide this in their own allreduce)."""
        votes = self.comm.allgather_obj(self.preemption.votes())
        stop = self.preemption.exit_code([sum(column) for column in zip(*votes)])
        if stop:
            self.stop_for_signal(stop)

    def stop_for_signal(self, code):
        """Checkpoint, then leave with 130 (Ctrl-C) or 75 (preemption: requeue) when a
        restart loses nothing (the step reached is on disk, or no step was trained since the
        start); else exit 4, saying what failed and the newest checkpoint on disk."""
        step = self.position.step
        if step > self.start_step:  # else nothing to lose, nothing to write
            self.save()
        unsaved = self.unsaved()
        distributed.allow_exit()  # rank 0's verdict is known: the others may leave
        stopped = f"{signals.stopped(code)} " \
                  f"({self.preemption.described() or 'signal on another rank'})"
        if unsaved and step > self.start_step:
            raise CheckpointLost(f"{stopped} at step {step}, but {unsaved}: a restart "
                                 f"would lose steps; exiting with {EXIT_UNSAVED}")
        kept = f"the checkpoint of step {step} is on disk" if not unsaved else \
            f"no step trained since the start (step {step}): nothing to lose"
        self.say(f"{stopped}: {kept}; exiting with {code}"
                 + (" for the job script to requeue" if code == EXIT_PREEMPTED else ""),
                 flush=True)
        raise StoppedBySignal(code)

    def end_epoch(self):
        """Epoch records, validation, plateau schedule, checkpoints, early stopping."""
        c, totals = self.config, self.epoch_totals
        self.metrics = {"train_loss": totals.mean("loss"),
                        "train_accuracy": totals.mean("correct")}
        self.record("train", scope="epoch", loss=self.metrics["train_loss"],
                    accuracy=self.metrics["train_accuracy"],
                    samples_per_s=totals.samples / max(totals.seconds(), 1e-9),
                    **{name: getattr(totals, name) for name in TIMES})
        if self.val_loader:
            self.validate(f"epoch {self.position.epoch}")
        self.position.next_epoch()
        self.epoch_totals = RunningTotals()
        epochs = self.position.epoch
        if self.plateau is not None:
            self.plateau.step(self.metrics[c.schedule.plateau_metric])
        improved = self.best.update(self.metrics)
        self.early_stopping.update(self.metrics)
        self.save()
        if improved and c.checkpoint.keep_best:
            self.save(checkpoint.BEST)
        if self.overfit and self.metrics.get("val_accuracy") == 1.0:
            self.say(f"overfit: 100% training accuracy on {len(self.train_split)} samples "
                     f"after {plural(epochs, 'epoch')}")
            self.overfitted = True
        elif self.overfit and epochs >= c.train.epochs:
            raise TrainingStopped(f"could not overfit {len(self.train_split)} samples in "
                                  f"{plural(c.train.epochs, 'epoch')}: check the model and "
                                  "the learning rate")
        patience = c.train.early_stopping_patience
        if patience and self.early_stopping.stale >= patience:
            self.say(f"early stopping: {c.train.early_stopping_metric} has not improved for "
                     f"{plural(patience, 'epoch')}")

    # --- validation, records, checkpoints ----------------------------------------------------
    def validate(self, label):
        """Evaluate the validation split on all ranks, record it, keep it in the summary and
        say it after `label`."""
        tick = time.perf_counter()
        with self.recipe.evaluation_weights():  # the EMA's when train.ema_decay is set
            seen = evaluate(self.model, self.val_loader.epoch_batches(0), self.val_loss_fn,
                            self.comm)
        self.record("val", loss=seen["loss"], accuracy=seen["accuracy"],
                    samples_per_s=seen["count"] / (time.perf_counter() - tick))
        self.metrics.update(val_loss=seen["loss"], val_accuracy=seen["accuracy"])
        self.say(f"{label}: val loss {seen['loss']:.4f} accuracy {seen['accuracy']:.4f}",
                 flush=True)

    def record(self, split, **values):
        if self.log is not None:
            self.log.write({"split": split, "epoch": self.position.epoch,
                            "step": self.position.step, "lr": self.opt.lr,
                            "time": time.perf_counter() - self.started, **values})

    def save(self, name=None):
        """Rank 0 writes the step checkpoint (or `name`, e.g. best.h5); a failed write keeps
        the previous checkpoints, is said with the file and the newest on disk, and training
        goes on (the end of the run or a stop signal decides what it costs)."""
        # sharded, the optimizer state is gathered on rank 0 with every rank taking part
        optimizer_state = self.opt.state_dict() \
            if self.config.optim.shard or self.comm.rank == 0 else None
        compression = self.sync.compression  # PowerSGD's errors: gathered from every rank
        compression_state = compression.state_dict(self.comm) if compression else None
        if self.comm.rank != 0:
            return
        step = self.position.step
        meta = {"trainer": self.state_dict(), "config": configuration.to_toml(self.config),
                "run_id": self.run_dir.run_id, "world_size": self.comm.size,
                "model_given": self.given_model is not None}
        ema = self.recipe.ema.state_dict() if self.recipe.ema else None
        content = (self.model.state_dict(), optimizer_state, meta)
        try:
            if name is None:
                path = checkpoint.save_step(self.run_dir.checkpoints, step, *content,
                                            self.config.checkpoint.keep, ema,
                                            compression_state, warn=self.say)
                self.on_disk.update(step=step, path=str(path), error=None)
            else:
                checkpoint.write(self.run_dir.checkpoints / name, *content, ema,
                                 compression_state)
        except OSError as error:  # checkpoint.CheckpointWriteError: a full disk, permissions
            failure = str(error) if isinstance(error, checkpoint.CheckpointWriteError) else \
                str(checkpoint.CheckpointWriteError(error.filename or f"of step {step}", error))
            if name is None:
                self.on_disk["error"] = failure
            self.say(f"warning: {failure}; {newest_on_disk(self.on_disk)}", flush=True)

    def unsaved(self):
        """Rank 0's record of the checkpoints on disk, on every rank: None when the step
        reached has its checkpoint there, else what failed and the newest on disk."""
        on_disk = self.comm.bcast_obj(self.on_disk if self.comm.rank == 0 else None)
        if on_disk["step"] == self.position.step:
            return None
        return (f"the checkpoint of step {self.position.step} could not be written "
                f"({on_disk['error']}); {newest_on_disk(on_disk)}")

    def finish(self):
        """The final checkpoint (when the last step has none in this run directory yet: a
        step budget that ended mid-epoch, a failed write tried once more, a finished run
        resumed into a new directory), the final validation when this
        process has not run one (a resumed run that had already ended), plots."""
        if self.unsaved():  # e.g. a finished run resumed into a new directory
            self.save()
        if self.val_loader and "val_loss" not in self.metrics:
            self.validate("final")
        missing = self.unsaved()
        distributed.allow_exit()  # the last collective is behind: the others may leave
        if self.comm.rank == 0 and self.config.log.plots:  # from the flushed metrics.jsonl
            try:
                self.say("plots: " + ", ".join(str(p) for p in plot_run(self.run_dir.path)))
            except RuntimeError as error:
                self.say(f"warning: no plots: {error}")
        if missing:  # exit 4, never 0: 0 promises the final checkpoint is on disk
            raise CheckpointLost(f"the run finished, but {missing}")
        self.say(f"done: {plural(self.position.step, 'step')}, "
                 f"{plural(self.position.epoch, 'epoch')}; run directory {self.run_dir.path}")
