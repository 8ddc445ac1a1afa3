"""python -m datasets FORMAT ... --out PATH [--shards N] [--chunk-samples K] [--compression C]
(installed: dist-nn-convert FORMAT ...)

Convert a data set to dist_nn's HDF5 layout; one sub-command per format. Every option's name is
the keyword of the format module's `convert`, which receives them all."""
import argparse
import importlib
import sys

EXIT_DATA = 2  # malformed input, as dist_nn.train's configuration and data errors

EPILOG = """\
FORMAT --help lists a format's options. The written file(s) are printed, one per line; train
on them with `python -m dist_nn.train data.path=PATH` (a glob such as "out-*.h5" for shards).
A file written with a /val split is evaluated after every epoch.

exit status: 0 written; 2 bad arguments, malformed input or an output that cannot be written
(one message naming the file and what is wrong; nothing is left under the output name)."""


def main(argv=None):
    args = vars(_parser().parse_args(argv))
    command = args.pop("command")
    # imported on use: imagefolder needs Pillow, which the other formats do not
    module = importlib.import_module(f".{args.pop('module')}", __package__)
    try:
        paths = module.convert(**args)
    except (ValueError, OSError) as error:  # malformed input, a full disk: one message
        print(f"python -m datasets {command}: error: {error}", file=sys.stderr)
        return EXIT_DATA
    for path in paths:
        print(path)
    return 0


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_output(parser, out_required=True):
    """The options every format shares: where and how DatasetWriter writes."""
    group = parser.add_argument_group("output")
    group.add_argument("--out", required=out_required,
                       help="the HDF5 file to write (shard files are named after it)")
    group.add_argument("--shards", type=_positive, default=1,
                       help="write name-00000-of-0000N.h5 files, each a share of every split")
    group.add_argument("--chunk-samples", type=_positive,
                       help="samples per HDF5 chunk (default: about 1 MiB)")
    group.add_argument("--compression", choices=("gzip", "lzf"))


def _parser():
    parser = argparse.ArgumentParser(prog="python -m datasets", description=__doc__,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    formats = parser.add_subparsers(dest="command", required=True, metavar="FORMAT")

    p = formats.add_parser("digits", help="the embedded default data set (8x8 digits)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="seeds the train/val split")
    p.add_argument("--refresh-embedded", action="store_true",
                   help="maintainers: regenerate dist_nn/data/digits.npz from scikit-learn")
    _add_output(p, out_required=False)
    p.set_defaults(module="digits")

    for name, title in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100")):
        p = formats.add_parser(name, help=f"{title}, python version (directory or .tar.gz)")
        p.add_argument("source", help="the directory of pickled batches, or the .tar.gz archive")
        if name == "cifar100":
            p.add_argument("--coarse", action="store_true",
                           help="the 20 coarse labels instead of the 100 fine ones")
        _add_output(p)
        p.set_defaults(module="cifar", variant=name)

    p = formats.add_parser("mnist", help="MNIST or Fashion-MNIST idx files (optionally .gz)")
    p.add_argument("directory", help="holds train-/t10k- images-idx3-ubyte, labels-idx1-ubyte")
    _add_output(p)
    p.set_defaults(module="mnist")

    p = formats.add_parser("imagefolder", help="root/<class name>/<images>")
    p.add_argument("root")
    p.add_argument("--grayscale", action="store_true", help="one channel instead of RGB")
    p.add_argument("--size", nargs=2, type=_positive, metavar=("H", "W"),
                   help="resize every image (else all must share one size)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the files held out for /val (0: none)")
    p.add_argument("--val-root", help="a separate image folder for /val instead")
    p.add_argument("--seed", type=int, default=0, help="seeds the train/val split")
    _add_output(p)
    p.set_defaults(module="imagefolder")

    p = formats.add_parser("npz", help="arrays in a .npz: x, y and optionally x_val, y_val")
    p.add_argument("path")
    p.add_argument("--layout", choices=("auto", "nchw", "nhwc"), default="auto",
                   help="of 4-d samples: (N, C, H, W) or (N, H, W, C); auto (default) takes "
                        "the only plausible one (1, 3 or 4 channels, or fewer channels than "
                        "pixels per side) and refuses ambiguous shapes")
    p.add_argument("--classes", dest="num_classes", type=_positive,
                   help="number of classes (default: the largest label + 1)")
    for key in ("x", "y", "x_val", "y_val"):
        p.add_argument(f"--{key.replace('_', '-')}-key", default=key,
                       help=f"name of the {key} array")
    _add_output(p)
    p.set_defaults(module="npz")

    p = formats.add_parser("synthetic", help="a seeded, learnable synthetic data set")
    p.add_argument("--samples", type=_positive, required=True, help="training samples")
    p.add_argument("--val-samples", type=int,
                   help="validation samples (default: a fifth of --samples; 0: no /val split)")
    p.add_argument("--shape", nargs=3, type=_positive, default=(3, 32, 32),
                   metavar=("C", "H", "W"))
    p.add_argument("--classes", type=_positive, default=10)
    p.add_argument("--dtype", choices=("uint8", "float32"), default="uint8")
    p.add_argument("--noise", type=float, default=0.5,
                   help="noise std relative to the class templates' std")
    p.add_argument("--seed", type=int, default=0)
    _add_output(p)
    p.set_defaults(module="synthetic")
    return parser


if __name__ == "__main__":
    sys.exit(main())
