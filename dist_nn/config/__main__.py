"""`python -m dist_nn.config`: print the resolved configuration as TOML (validated as
dist_nn.train validates it), or the reference page (--reference)."""
import argparse
import sys

from . import ConfigError, load, reference, to_toml


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m dist_nn.config",
        description="Print the resolved configuration as TOML: the defaults, then --config "
                    "FILE, then the overrides, validated exactly as dist_nn.train does. A "
                    "quick check of a config file or command line before a long job.",
        epilog="Every key, its type, default, valid values and meaning: --reference (the "
               "page docs/configuration.md). The trainer takes the same --config, --resume "
               "and overrides. exit status: 0 valid, 2 configuration error (one message).")
    parser.add_argument("--config", metavar="FILE.toml", help="a TOML file of [section] tables")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="overrides, e.g. optim.lr=0.1 'model.channels=[16, 32]'")
    parser.add_argument("--resume", help="as dist_nn.train's (auto needs log.run_dir)")
    parser.add_argument("--reference", action="store_true",
                        help="print the reference page (docs/configuration.md) instead")
    args = parser.parse_intermixed_args(argv)
    if args.reference:
        print(reference(), end="")
        return 0
    try:
        if args.resume:  # on top of the checkpoint's recorded config, as dist_nn.train does
            from ..resume import resumed_config
            config = resumed_config(args.config, args.overrides, args.resume)[0]
        else:
            config = load(args.config, args.overrides)
        print(to_toml(config))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
