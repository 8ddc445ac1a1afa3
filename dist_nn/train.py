"""Train a model data-parallel: the same command runs as one process, under
`mpirun -n N` / `python -m launch.mpirun -n N`, or as SLURM tasks (`srun`).

Configuration comes from the defaults, then --config FILE.toml, then `section.key=value`
overrides (every key, its type, default and meaning: docs/configuration.md, or
`python -m dist_nn.config --reference`). Exit status: 0 finished with its final checkpoint
on disk; 2 configuration or data error; 3 stopped by a guard (NaN/Inf, diverging loss);
4 finished or stopped, but the checkpoint of the step reached could not be written; 75
preempted (requeue) and 130 interrupted by Ctrl-C, with the step reached on disk or nothing
trained yet; anything else: the job aborted.
"""
if __name__ == "__main__":  # first of all: a stop signal during the imports below is kept
    from .signals import PreemptionSignal
    PreemptionSignal()

import argparse
import sys

from . import config as configuration
from . import distributed
from .data import DataError, DataReadError
from .monitor.guards import TrainingStopped
from .signals import PreemptionSignal
from .trainer import EXIT_CONFIG, EXIT_STOPPED, CheckpointLost, StoppedBySignal, Trainer

__all__ = ["EXIT_CONFIG", "EXIT_STOPPED", "main"]


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m dist_nn.train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m dist_nn.train model.name=resnet20 data.path=cifar10.h5\n"
               "  python -m launch.mpirun -n 4 python -m dist_nn.train --config run.toml\n"
               "  python -m dist_nn.train log.run_dir=runs/a --resume auto\n"
               "  python -m dist_nn.train model.name=mymodels:wide model.options.width=64")
    parser.add_argument("--config", help="a TOML file of config sections")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, e.g. optim.lr=0.1 model.options.width=64")
    parser.add_argument("--resume", help="`auto`: the newest valid checkpoint of log.run_dir; "
                                         "or a checkpoint file")
    parser.add_argument("--debug", action="store_true", help="gradient check of the model, "
                        "dead-ReLU and update/weight reports")
    return parser.parse_intermixed_args(argv)  # options may follow the overrides


def main(argv=None):
    PreemptionSignal()  # before MPI and the data: a stop signal there is kept
    args = parse_args(argv)
    try:
        trainer, error = Trainer(args.config, args.overrides, resume=args.resume,
                                 debug=args.debug), None
        comm = trainer.comm
    except configuration.ConfigError as failure:  # before MPI: still start it, to say it once
        trainer, error = None, failure
        try:
            comm = distributed.setup("auto", "cpu")
        except distributed.LaunchError as launch_failure:  # every task alone: each says it
            print(f"error: {launch_failure}", file=sys.stderr)
            return EXIT_CONFIG
    except distributed.LaunchError as failure:
        if failure.said_here:
            print(f"error: {failure}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if error is not None:
            raise error
        trainer.fit()
        return 0
    except DataReadError as failure:  # this rank's read failed mid-run; the others cannot know
        print(f"error: rank {comm.rank}: {failure}", file=sys.stderr, flush=True)
        comm.abort(EXIT_CONFIG)
    except (configuration.ConfigError, DataError) as failure:  # alike on every rank: said once
        if comm.rank == 0:
            print(f"error: {failure}", file=sys.stderr)
        return EXIT_CONFIG
    except TrainingStopped as stop:
        if comm.rank == 0:
            print(f"stopped: {stop}", file=sys.stderr)
        return EXIT_STOPPED
    except CheckpointLost as lost:
        if comm.rank == 0:
            print(f"error: {lost.message}", file=sys.stderr)
        return lost.code
    except StoppedBySignal as stop:
        return stop.code


if __name__ == "__main__":
    sys.exit(main())
