"""The `keras-superclass` command.

Each sub-command lives in its own module of this package and defines
`add_parser(subparsers)`, which registers the sub-command and sets
`func(args) -> int` as its handler.
"""

import argparse
import importlib
import sys

from keras_superclass.cli import quiet_startup

# Sub-command modules, in the order `--help` lists them.
COMMAND_MODULES = (
    "shards",
    "vocab",
    "df",
    "synsets",
    "train",
    "probe",
    "zeroshot",
    "retrieval",
    "predict",
    "export",
    "convert",
    "demo",
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-superclass",
        description="Classification-based vision-language pre-training "
        "(SuperClass, CatLIP, CRU-Net) on Keras 3.",
        epilog="TensorFlow's own log lines are hidden; set "
        "TF_CPP_MIN_LOG_LEVEL=0 to see them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"keras_superclass.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"keras_superclass.cli.{name}":
                continue  # Not part of this build.
            raise
        module.add_parser(subparsers)
    return parser


def main(argv=None):
    quiet_startup()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        # User errors: one clear line, no traceback.
        print(
            f"keras-superclass {args.command}: error: {error}", file=sys.stderr
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
