"""The typed sections of a run's configuration: one dataclass per TOML table, every key with
its type (the default's), default, one-line meaning and valid values. The reference page
docs/configuration.md is generated from these declarations (`python -m dist_nn.config
--reference`), so documentation and code cannot drift apart."""
from dataclasses import dataclass, field

from .. import models, optim
from ..data import augment
from .values import (Check, above, at_least, items, off_or_above, off_or_at_least, path,
                     text, within)


def option(default, help, choices=None, check=None):
    """A config field: its default, a description, and its valid values: `choices`, or a
    `check` (a Check: a range, a list's items, text); only booleans need neither (their type
    is their range). tests/test_config.py refuses a key that declares none."""
    factory = (lambda: type(default)(default)) if isinstance(default, (list, dict)) else None
    meta = {"help": help, "choices": choices, "check": check}
    if factory:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


MODELS = tuple(models.MODELS)
OPTIMIZERS = tuple(optim.OPTIMIZERS)
SCHEDULES = tuple(optim.SCHEDULES)
METRICS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")


def lower_is_better(metric):
    """True for the losses of METRICS, False for the accuracies."""
    return metric.endswith("loss")

# optimizers with a momentum (schedule.momentum_start ramps it; optim.nesterov needs it)
WITH_MOMENTUM = tuple(name for name, kind in optim.OPTIMIZERS.items()
                      if "momentum" in kind.hyperparameters)


POSITIVE, NON_NEGATIVE, PROBABILITY = at_least(1), at_least(0), within(0, 1)
WIDTHS = items(int, POSITIVE, nonempty=True)
BUILDER = Check(lambda v: v in MODELS or (":" in v and "\0" not in v and len(v) <= 1000),
                f"one of {', '.join(MODELS)}, or an import path \"package.module:function\" "
                "(at most 1000 characters)", "vgg")
KEYWORDS = Check(lambda v: all(k.isidentifier() for k in v),
                 "a table of keyword arguments (names like width)", {"2x": 1})


@dataclass
class Model:
    name: str = option("cnn", "model builder: " + ", ".join(MODELS) + ", or your own as "
                              "\"package.module:function\"", check=BUILDER)
    options: dict = option({}, "keyword options of the builder (model.options.width=64); "
                               "the built-in models also take the keys below", check=KEYWORDS)
    dropout: float = option(0.3, "dropout probability of models with dropout (0 turns it off)",
                            check=within(0, 1, open_high=True))
    sync_bn: bool = option(True, "synchronise BatchNorm statistics across ranks")
    hidden: list = option([512, 512], "mlp: hidden layer widths", check=WIDTHS)
    activation: str = option("relu", "mlp: activation",
                             ("relu", "leaky_relu", "prelu", "elu", "sigmoid", "tanh"))
    batch_norm: bool = option(False, "mlp: BatchNorm1d after each hidden layer")
    maxout_pieces: int = option(0, "mlp: > 0 makes each hidden layer a Maxout of that many pieces",
                                check=NON_NEGATIVE)
    channels: list = option([32, 64], "cnn: channels of each conv-bn-relu-pool stage",
                            check=WIDTHS)
    fc: int = option(128, "cnn: width of the fully connected layer", check=POSITIVE)
    init_from: str = option("", "transfer learning: a checkpoint (or converted PyTorch state "
                                "dict) whose matching weights initialise the model", check=path())
    freeze: list = option([], "transfer learning: parameter-name prefixes to freeze "
                              "(e.g. [\"conv1\", \"layer1\"]); frozen weights are not trained "
                              "and not synchronised", check=items(str, text(nonempty=True)))


@dataclass
class Data:
    path: str = option("digits", "an HDF5 file, a glob of shard files, or `digits` (embedded)",
                       check=path(nonempty=True))
    batch_size: int = option(0, "samples per rank per step; 0: global_batch_size split "
                                "among the ranks", check=NON_NEGATIVE)
    global_batch_size: int = option(64, "samples per step over all ranks, when batch_size is "
                                        "0: any world size then trains alike", check=POSITIVE)
    eval_batch_size: int = option(256, "samples per rank per evaluation batch", check=POSITIVE)
    cache_mb: int = option(512, "keep a split in memory when it fits this many MiB, one "
                                "copy per node shared by its ranks", check=NON_NEGATIVE)
    prefetch: int = option(2, "batches read ahead by the background reader", check=POSITIVE)
    order: str = option("auto", "training order of an epoch: exact (a uniform permutation), "
                                "chunks (storage chunks permuted, samples shuffled within "
                                "shuffle_window chunks: each chunk read once), auto (chunks "
                                "when the split does not fit data.cache_mb, else exact)",
                        ("auto", "exact", "chunks"))
    shuffle_window: int = option(16, "chunks order: chunks whose samples are shuffled together",
                                 check=within(1, 1_000_000))
    read_ahead_mb: int = option(64, "memory for reading several batches at once, chunk by "
                                    "chunk (half for the batches, half for chunks held)",
                                check=within(1, 1_000_000))


@dataclass
class Augment:
    enabled: bool = option(False, "master switch for augmentation (training data only)")
    flip: float = option(0.5, "probability of a horizontal flip", check=PROBABILITY)
    crop: int = option(4, "pad-and-random-crop: translation by up to this many pixels",
                       check=NON_NEGATIVE)
    rotate: float = option(0.0, "maximum rotation in degrees", check=within(0, 180))
    scale: float = option(0.0, "maximum relative zoom in or out",
                          check=within(0, augment.MAX_SCALE))
    brightness: float = option(0.0, "maximum brightness shift (normalised units)",
                               check=NON_NEGATIVE)
    contrast: float = option(0.0, "maximum relative contrast change", check=PROBABILITY)
    noise: float = option(0.0, "standard deviation of Gaussian noise (normalised units)",
                          check=NON_NEGATIVE)
    cutout: int = option(0, "side of the square cut out (pixels)", check=NON_NEGATIVE)
    probability: float = option(0.5, "probability of each of rotate, scale, brightness/"
                                     "contrast, noise and cutout", check=PROBABILITY)
    taper_epochs: int = option(0, "strength tapers linearly to nothing over the last epochs",
                               check=NON_NEGATIVE)


@dataclass
class Optim:
    name: str = option("sgd", "optimizer", OPTIMIZERS)
    lr: float = option(0.05, "learning rate (at the reference batch size if scale_lr)",
                       check=NON_NEGATIVE)
    momentum: float = option(0.9, "momentum (sgd, rmsprop)", check=NON_NEGATIVE)
    nesterov: bool = option(False, "Nesterov momentum (sgd)")
    weight_decay: float = option(5e-4, "L2 weight decay (decoupled in adamw); not on "
                                       "biases and norm parameters", check=NON_NEGATIVE)
    l1: float = option(0.0, "L1 penalty; not on biases and norm parameters", check=NON_NEGATIVE)
    betas: list = option([0.9, 0.999], "adam, adamw: coefficients of the moment averages",
                         check=items(float, within(0, 1, open_high=True), length=2))
    eps: float = option(1e-8, "adam, adamw, rmsprop: denominator term", check=above(0))
    scale_lr: bool = option(False, "linear scaling rule: lr * global batch / reference_batch")
    reference_batch: int = option(64, "the batch size lr is given for when scale_lr",
                                  check=POSITIVE)
    accumulate: int = option(1, "micro-batches whose gradients make one step", check=POSITIVE)
    clip_grad_norm: float = option(0.0, "clip the synchronized gradient's global L2 norm to "
                                        "this (after unscaling under amp; 0: off)",
                                   check=NON_NEGATIVE)
    shard: bool = option(False, "ZeRO-1: each rank keeps the optimizer state of its 1/N of "
                                "the parameters (reduce-scatter, then allgather)")


@dataclass
class Schedule:
    name: str = option("cosine", "learning-rate schedule", SCHEDULES)
    warmup_epochs: float = option(0.0, "linear warmup from warmup_start * lr (Goyal et al.)",
                                  check=NON_NEGATIVE)
    warmup_start: float = option(0.1, "lr factor at the start of the warmup", check=PROBABILITY)
    step_epochs: float = option(10.0, "step: epochs between decays", check=above(0))
    milestones: list = option([], "multistep: epochs of the decays",
                              check=items(float, NON_NEGATIVE, ascending=True))
    gamma: float = option(0.1, "step, multistep: decay factor", check=within(0, 1, open_low=True))
    decay: float = option(0.1, "exponential: k in lr exp(-k epochs); inverse_time: k in "
                               "lr / (1 + k epochs)", check=NON_NEGATIVE)
    min_lr: float = option(0.0, "cosine: final learning rate; plateau: lower bound",
                           check=NON_NEGATIVE)
    plateau_factor: float = option(0.1, "plateau: lr factor when the metric stalls",
                                   check=within(0, 1, open_low=True, open_high=True))
    plateau_patience: int = option(3, "plateau: epochs without improvement before a cut",
                                   check=NON_NEGATIVE)
    plateau_metric: str = option("val_loss", "plateau: the metric watched", METRICS)
    momentum_start: float = option(0.0, "if > 0: momentum ramps from it to optim.momentum",
                                   check=within(0, 1, open_high=True))
    momentum_epochs: float = option(5.0, "length of the momentum ramp", check=above(0))


@dataclass
class Train:
    epochs: int = option(20, "epochs to train (stop after epochs or max_steps)",
                         check=POSITIVE)
    max_steps: int = option(0, "if > 0: stop after this many optimizer steps", check=NON_NEGATIVE)
    seed: int = option(0, "one seed for initialisation, shuffling, augmentation and dropout",
                       check=NON_NEGATIVE)
    dtype: str = option("float32", "float dtype of parameters and activations",
                        ("float32", "float64"))
    device: str = option("auto", "where arrays live", ("auto", "cpu", "gpu"))
    comm: str = option("auto", "communicator", ("auto", "local", "mpi", "nccl"))
    cuda_aware: str = option("auto", "on a GPU with train.comm mpi: MPI takes device buffers "
                                     "(on) or pinned host copies of them (off); auto asks the "
                                     "MPI library (MPIX_Query_cuda_support)",
                             ("auto", "on", "off"))
    bucket_mb: float = option(25.0, "gradient allreduce bucket size", check=above(0))
    overlap: bool = option(True, "start each bucket's allreduce during backward")
    grad_compression: str = option("none", "gradient compression of the bucket collectives: "
                                           "fp16/bf16 casts (half the bytes), powersgd "
                                           "low-rank factors with error feedback",
                                   ("none", "fp16", "bf16", "powersgd"))
    powersgd_rank: int = option(4, "powersgd: the rank of each matrix's approximation",
                                check=within(1, 1024))
    watchdog_s: float = option(300.0, "abort the job, naming the missing ranks, when a "
                                      "collective waits longer than this, or start-up takes "
                                      "longer (seconds; 0 turns it off)",
                               check=off_or_at_least(1))
    early_stopping_patience: int = option(0, "if > 0: stop after this many epochs without "
                                             "improvement of early_stopping_metric",
                                          check=NON_NEGATIVE)
    early_stopping_metric: str = option("val_loss", "metric watched by early stopping", METRICS)
    early_stopping_min_delta: float = option(0.0, "smallest change that counts as improvement",
                                             check=NON_NEGATIVE)
    explosion_factor: float = option(3.0, "stop when the loss exceeds this many times its "
                                          "initial value (0 turns the guard off)",
                                     check=off_or_above(1))
    overfit_samples: int = option(0, "debug: train on this many samples only, until 100% "
                                     "training accuracy", check=NON_NEGATIVE)
    amp: str = option("off", "mixed precision: forward and backward in float16 (dynamic "
                             "loss scaling) or bfloat16 over float32 master weights",
                      ("off", "fp16", "bf16"))
    label_smoothing: float = option(0.0, "cross-entropy label smoothing (0: off)",
                                    check=within(0, 1, open_high=True))
    ema_decay: float = option(0.0, "exponential moving average of the weights, used for "
                                   "validation, best.h5 and evaluation (0: off; e.g. 0.999)",
                              check=within(0, 1, open_high=True))


@dataclass
class Checkpoint:
    every_steps: int = option(0, "also save every this many steps, mid-epoch too (0: at the "
                                 "end of each epoch only)", check=NON_NEGATIVE)
    keep: int = option(3, "how many of the newest checkpoints rank 0 keeps", check=POSITIVE)
    keep_best: bool = option(True, "also keep the best by best_metric as best.h5")
    best_metric: str = option("val_accuracy", "what `best` means", METRICS)


@dataclass
class Log:
    run_dir: str = option("", "the run directory (default: runs/<timestamp>); `--resume "
                              "auto` resumes from its newest valid checkpoint", check=path())
    overwrite: bool = option(False, "a fresh run may take a run directory holding another "
                                    "run's checkpoints (they are deleted); false: refused")
    every_steps: int = option(10, "write a training record every this many steps",
                              check=POSITIVE)
    tensorboard: str = option("auto", "TensorBoard event files", ("auto", "on", "off"))
    plots: bool = option(True, "write loss/accuracy/lr PNG plots (and per-rank times) at the "
                               "end (needs matplotlib)")
    straggler_threshold: float = option(0.2, "on 2 or more ranks: name the straggler, the rank "
                                             "computing more than this fraction (0.2 = 20%) "
                                             "above the median; 0 turns the per-rank times off",
                                        check=within(0, 10))
    debug_every: int = option(50, "--debug: steps between dead-ReLU and update/weight reports",
                              check=POSITIVE)


@dataclass
class Config:
    model: Model = field(default_factory=Model)
    data: Data = field(default_factory=Data)
    augment: Augment = field(default_factory=Augment)
    optim: Optim = field(default_factory=Optim)
    schedule: Schedule = field(default_factory=Schedule)
    train: Train = field(default_factory=Train)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    log: Log = field(default_factory=Log)

