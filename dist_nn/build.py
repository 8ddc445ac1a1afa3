"""Building a run's parts from its config: the data path, augmentation, optimizer and
schedules, and transfer learning (initial weights, frozen layers). The run directory is
run_dir.py's."""
import os
from pathlib import Path

import h5py

from . import checkpoint, config as configuration, distributed, fs, nn, optim
from .data import DataError, augment, embedded, writer
from .distributed import raise_together

CACHE = Path(os.environ.get("DIST_NN_CACHE", Path.home() / ".cache" / "dist_nn"))


def data_path(path, comm):
    """The data files to read: `digits` is the embedded data set, built once per node into
    the cache ($DIST_NN_CACHE, else ~/.cache/dist_nn) by the node's first rank; the cache's
    name carries the format version, so a file of an older format is never read."""
    if path != "digits":
        return path
    cached = CACHE / f"digits-v{writer.FORMAT_VERSION}.h5"
    error = None
    if comm.local_rank == 0 and not cached.exists():
        try:
            embedded.build(cached)
        except (OSError, RuntimeError) as failure:  # h5py: either; all ranks stop alike
            error = DataError(f"cannot build the digits data set in {CACHE}: "
                              f"{fs.reason(failure)}; set "
                              "DIST_NN_CACHE to a writable directory")
    raise_together(comm, error, DataError)
    return str(cached)


def has_split(path, split):
    """True when the (first) data file has `split`; every rank sees the same answer."""
    from .data import shard_files
    with h5py.File(shard_files(path)[0], "r") as f:
        return f"{split}/x" in f


def make_augmenter(augment_config, epochs, sample_shape):
    """The configured augmentation pipeline, or None when augment.enabled is false;
    ConfigError for sizes beyond the samples' (a padding the size of a million pixels)."""
    a = augment_config
    if not a.enabled:
        return None
    side = min(sample_shape[1:])
    if a.crop > side:
        raise configuration.ConfigError(f"augment.crop = {a.crop} translates by more than the samples' "
                          f"side ({side} pixels of {tuple(sample_shape)}): at most {side}")
    ops = {}
    if a.flip > 0:
        ops["flip"] = {"p": a.flip}
    if a.crop > 0:
        ops["crop"] = {"padding": a.crop}
    if a.rotate > 0:
        ops["rotate"] = {"degrees": a.rotate, "p": a.probability}
    if a.scale > 0:
        ops["scale"] = {"amount": a.scale, "p": a.probability}
    if a.brightness > 0 or a.contrast > 0:
        ops["brightness_contrast"] = {"brightness": a.brightness, "contrast": a.contrast,
                                      "p": a.probability}
    if a.noise > 0:
        ops["noise"] = {"std": a.noise, "p": a.probability}
    if a.cutout > 0:
        ops["cutout"] = {"size": a.cutout, "p": a.probability}
    return augment.from_config(ops, taper_epochs=a.taper_epochs, epochs=epochs)


def make_optimizer(optim_config, params, lr):
    c = optim_config
    options = {
        "sgd": dict(momentum=c.momentum, nesterov=c.nesterov),
        "rmsprop": dict(momentum=c.momentum, eps=c.eps),
        "adam": dict(betas=tuple(c.betas), eps=c.eps),
        "adamw": dict(betas=tuple(c.betas), eps=c.eps),
    }.get(c.name, {})
    return optim.OPTIMIZERS[c.name](params, lr=lr, weight_decay=c.weight_decay, l1=c.l1,
                                    **options)


def make_optimizer_and_sync(config, model, comm, lr):
    """(optimizer, gradient sync) of a run. With optim.shard, ZeRO-1: a ShardedOptimizer that
    keeps the state of this rank's shard only, and the ShardedGradSync that reduce-scatters
    into it; else the optimizer on all parameters and GradSync. Both sync without averaging:
    the trainer's losses are shares of the global mean."""
    make = lambda params: make_optimizer(config.optim, params, lr)  # noqa: E731
    try:
        compression = distributed.compression.make(config.train.grad_compression,
                                                   config.train.powersgd_rank,
                                                   config.train.seed)
    except nn.amp.PrecisionError as error:
        raise configuration.ConfigError(f"train.grad_compression: {error}") from None
    options = dict(bucket_mb=config.train.bucket_mb, overlap=config.train.overlap,
                   average=False, compression=compression)
    if not any(p.requires_grad for p in model.parameters()):
        raise configuration.ConfigError("the model has no trainable parameters (model.freeze froze them "
                          "all, or the builder made none): nothing to train")
    if config.optim.shard:
        return distributed.sharded(make, model, comm, **options)
    opt = make(model.parameters())
    return opt, distributed.GradSync(model, opt.flat, comm, **options)


def make_schedules(schedule_config, opt, steps_per_epoch, total_steps):
    """([schedules stepped once per optimizer step], the plateau schedule stepped once per
    epoch with its metric, or None). Lengths in the config are epochs; cosine spans the run
    (total_steps) after the warmup."""
    c = schedule_config
    steps = lambda epochs: max(1, round(epochs * steps_per_epoch))  # noqa: E731
    per_step = []
    if c.name == "plateau":  # config.validate refused a warmup with it
        mode = "min" if configuration.lower_is_better(c.plateau_metric) else "max"
        plateau = optim.PlateauDecay(opt, mode=mode, factor=c.plateau_factor,
                                     patience=c.plateau_patience, min_lr=c.min_lr)
    else:
        plateau = None
        main = {
            "constant": lambda: optim.Constant(opt),
            "step": lambda: optim.StepDecay(opt, steps(c.step_epochs), c.gamma),
            "multistep": lambda: optim.MultiStepDecay(opt, [steps(m) for m in c.milestones],
                                                      c.gamma),
            "exponential": lambda: optim.ExponentialDecay(opt, c.decay / steps_per_epoch),
            "inverse_time": lambda: optim.InverseTimeDecay(opt, c.decay / steps_per_epoch),
            "cosine": lambda: optim.CosineDecay(
                opt, max(1, total_steps - (steps(c.warmup_epochs) if c.warmup_epochs else 0)),
                c.min_lr),
        }[c.name]()
        per_step.append(optim.Warmup(opt, steps(c.warmup_epochs), c.warmup_start, after=main)
                        if c.warmup_epochs else main)
    if c.momentum_start:  # config.validate refused an optimizer without a momentum
        per_step.append(optim.MomentumRamp(opt, c.momentum_start, opt.momentum,
                                           steps(c.momentum_epochs)))
    return per_step, plateau


def classifier_names(model):
    """Parameter names of the model's last layer with parameters (its classifier)."""
    owners = [(prefix, m) for prefix, m in model.named_modules() if m.own_parameters()]
    prefix, last = owners[-1]
    return {f"{prefix}.{name}" if prefix else name for name, _ in last.own_parameters()}


def transfer_weights(model, path):
    """Initialise from a checkpoint (or a converted PyTorch state dict): every matching
    parameter and buffer is copied; a classifier whose shape differs (another number of
    classes) keeps its fresh initialisation. Returns what was done, for the log."""
    try:
        state, _, _ = checkpoint.read(path)
    except checkpoint.CheckpointError as error:
        raise configuration.ConfigError(f"model.init_from: {error}") from None
    own = model.state_dict()
    classifier = classifier_names(model)
    replaced = {k for k in classifier if k in state and state[k].shape != own[k].shape}
    problems = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                if k in state and k not in replaced and state[k].shape != v.shape]
    missing = [k for k in own if k not in state and k not in classifier]
    if problems or missing:
        raise configuration.ConfigError(
            f"model.init_from {path} does not fit this model: "
            + "; ".join(problems + [f"{k} missing" for k in missing[:5]]))
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in replaced},
                          strict=False)
    note = f"; replaced classifier {sorted(replaced)}" if replaced else ""
    return f"initialised from {path}{note}"


def freeze(model, prefixes):
    """Parameters whose names start with one of `prefixes` stop training (no optimizer
    update, no gradient sync)."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        hits = [name for name in names if name == prefix or name.startswith(prefix + ".")]
        if not hits:
            raise configuration.ConfigError(
                f"model.freeze: {prefix!r} matches no parameter; names start with "
                f"{sorted({n.split('.')[0] for n in names})}")
    for name, p in model.named_parameters():
        if any(name == q or name.startswith(q + ".") for q in prefixes):
            p.requires_grad = False
