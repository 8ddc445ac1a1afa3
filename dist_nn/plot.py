"""python -m dist_nn.plot RUN_DIR [--out DIR]

Plot a run's metrics.jsonl (loss, accuracy, learning rate, and each rank's time per step when
the records carry it) as PNG files and print their paths.
Training draws them itself at its end (log.plots = true); this redraws them at any time, also
while the run goes on.

exit status: 0 written; 2 no run directory or metrics.jsonl, or a malformed record; 1
matplotlib is missing (pip install matplotlib)."""
import argparse
from pathlib import Path

from .monitor import plot_run


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dist_nn.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="a run directory holding metrics.jsonl")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="where to write the PNGs (default: RUN_DIR)")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        parser.exit(2, f"{parser.prog}: error: no run directory {args.run_dir}\n")
    if not (args.run_dir / "metrics.jsonl").is_file():
        parser.exit(2, f"{parser.prog}: error: {args.run_dir} has no metrics.jsonl\n")
    try:
        paths = plot_run(args.run_dir, args.out)
    except ValueError as error:  # a malformed line: the message names the file and line
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except RuntimeError as error:  # matplotlib missing: the message says how to install it
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
