"""`python -m dist_nn.evaluate CHECKPOINT --data PATH [--split val] [section.key=value ...]`:
loss, accuracy and the confusion matrix of a checkpoint's model on a data set. The model is
rebuilt from the checkpoint's recorded config, with the values given on top; a checkpoint
that holds weights only (converted from PyTorch) needs its model named (model.name=...).
Under `mpirun -n N` each rank evaluates its share; sums and counts are reduced, so padding
never counts twice."""
import argparse
import sys
from dataclasses import dataclass

import numpy

from . import backend, checkpoint, config as configuration, models, nn
from . import distributed
from .resume import model_named
from .data import DataError, DistributedSampler, Loader, open_split
from .monitor import plural


@dataclass
class Seen(distributed.Totals):
    loss: float = 0.0     # summed over the samples
    correct: float = 0.0


def evaluate(model, batches, loss_fn, comm, num_classes=None):
    """{"loss", "accuracy", "count"} over all ranks' batches (x, y, valid), in eval mode and
    under nn.no_grad() (no layer keeps backward state); with num_classes also "confusion"
    (true label x predicted label counts)."""
    model.eval()
    seen = Seen()
    confusion = numpy.zeros((num_classes or 1, num_classes or 1))
    for x, y, valid in batches:
        if valid == 0:
            continue
        with nn.no_grad():
            logits = model.forward(x[:valid])
            y = y[:valid]
            predicted = logits.argmax(axis=1)
            seen += Seen(valid, loss=float(loss_fn.forward(logits, y, mean_over=1)),
                         correct=int((predicted == y).sum()))
        if num_classes:
            numpy.add.at(confusion, (backend.to_host(y), backend.to_host(predicted)), 1)
    model.train()
    total = seen.reduced(comm)
    result = {"loss": total.mean("loss"), "accuracy": total.mean("correct"),
              "count": int(total.samples)}
    if num_classes:
        comm.allreduce(confusion)
        result["confusion"] = confusion.astype(numpy.int64)
    return result


EPILOG = """\
On N ranks: python -m launch.mpirun -n N python -m dist_nn.evaluate CHECKPOINT --data PATH
(installed: dist-nn-mpirun -n N dist-nn-evaluate ...), or mpirun/srun as for training.

exit status: 0 evaluated; 2 an unreadable checkpoint or data file (one message)."""


def recorded_config(path, meta, overrides, trust_model=False):
    """The config a checkpoint records, with `overrides` on top; ConfigError when it records
    none (weights converted from PyTorch) and no model.name is given, or names a user's model
    that is not named now (a file does not choose code) unless `trust_model`."""
    recorded = meta.get("config", "")
    if not isinstance(recorded, str):
        raise configuration.ConfigError(f"{path}: its recorded config is not TOML text")
    named = model_named("", overrides)
    if not recorded and named is None:
        raise configuration.ConfigError(
            f"{path} holds weights only, no training config (converted from PyTorch?): name "
            "its model, e.g. model.name=resnet20 (and model.options.KEY=... as built)")
    config = configuration.loads(recorded, overrides, source=f"the config of {path}")
    if not trust_model:
        models.check_chosen_by_user(config.model.name, named, path, " or pass --trust-model")
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dist_nn.evaluate", description=__doc__,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint file (runs/NAME/checkpoints/best.h5, "
                                           "step-*.h5): the model is rebuilt from its config")
    parser.add_argument("--data", required=True, help="an HDF5 file, a glob of shards, digits")
    parser.add_argument("--split", default="val", choices=("train", "val"))
    parser.add_argument("--batch-size", type=int, default=256, help="per rank")
    parser.add_argument("--trust-model", action="store_true",
                        help="build the user's model that the checkpoint names (pkg.module:fn) "
                             "without naming it: imports and runs that module")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config values on top of the checkpoint's, e.g. model.name=resnet20 "
                             "for a checkpoint converted from PyTorch (weights only)")
    args = parser.parse_intermixed_args(argv)
    comm = distributed.setup("auto", "auto")
    from .build import data_path
    try:
        contents = checkpoint.read(args.checkpoint)
        model_state, _, meta = contents
        config = recorded_config(args.checkpoint, meta, args.overrides, args.trust_model)
        backend.use(dtype=config.train.dtype)
        if meta.get("model_given"):
            raise configuration.ConfigError(
                f"{args.checkpoint} holds the weights of a model given to Trainer as an "
                "object, which cannot be rebuilt from its config: build it yourself and "
                "load_state_dict(dist_nn.checkpoint.read(path)[0])")
        split = open_split(data_path(args.data, comm), args.split, comm)
        model = models.from_config(config.model, split.sample_shape, split.num_classes)
        try:
            model.load_state_dict(contents.ema or model_state)  # the averaged weights if kept
        except ValueError as error:
            raise configuration.ConfigError(f"the weights of {args.checkpoint} do not fit "
                                            f"model {config.model.name!r}: {error}") from None
    except (checkpoint.CheckpointError, DataError, configuration.ConfigError,
            models.ModelError) as error:
        if comm.rank == 0:
            print(f"error: {error}", file=sys.stderr)
        return 2
    loader = Loader(split, DistributedSampler(len(split), comm.rank, comm.size, shuffle=False),
                    max(comm.size, args.batch_size * comm.size))
    result = evaluate(model, loader, nn.SoftmaxCrossEntropy(), comm, split.num_classes)
    if comm.rank == 0:
        names = split.class_names or [str(c) for c in range(split.num_classes)]
        weights = ", EMA weights" if contents.ema else ""
        print(f"{args.checkpoint} on {args.data} ({args.split}, "
              f"{plural(result['count'], 'sample')}{weights}): "
              f"loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}")
        width = max(len(n) for n in names)
        print("confusion matrix (rows: true, columns: predicted)")
        print(" " * width + " " + " ".join(f"{n[:6]:>6}" for n in names))
        for name, row in zip(names, result["confusion"]):
            print(f"{name:>{width}} " + " ".join(f"{v:6d}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
