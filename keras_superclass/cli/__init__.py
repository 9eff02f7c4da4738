"""The `keras-superclass` command line (sub-commands: `main.py`).

Importing this package when the process is the command (the package's
`__init__` imports it first) hides TensorFlow's start-up log lines: that
has to happen before TensorFlow is first imported.
"""

import argparse
import contextlib
import importlib
import os
import sys


def is_command_line():
    """Whether this process runs the `keras-superclass` command (the
    installed script or `python -m keras_superclass.cli.main`)."""
    if sys.argv and os.path.basename(sys.argv[0]).startswith(
        "keras-superclass"
    ):
        return True
    argv = list(getattr(sys, "orig_argv", ()))
    return any(
        a == "-m" and b == "keras_superclass.cli.main"
        for a, b in zip(argv, argv[1:])
    )


@contextlib.contextmanager
def _stderr_to_devnull():
    """Sends this process's stderr (file descriptor 2) to the null device."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_startup():
    """Silences TensorFlow's, XLA's and absl's start-up log lines.

    Lines logged while TensorFlow loads (oneDNN, "no CUDA drivers") ignore
    `TF_CPP_MIN_LOG_LEVEL`, so Keras and TensorFlow are imported with
    stderr discarded (an import error still surfaces as the Python
    exception). Does nothing when `TF_CPP_MIN_LOG_LEVEL=0` is set: then
    every line shows.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    if "tensorflow" not in sys.modules:
        with _stderr_to_devnull():
            # Keras first: it loads the backend (loading TensorFlow before
            # PyTorch crashes the PyTorch backend), then the tf.data stack.
            importlib.import_module("keras")
            importlib.import_module("tensorflow")
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)


if is_command_line():
    quiet_startup()


def add_overwrite_argument(parser):
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace an existing output directory.",
    )


def check_output_dir(out, overwrite):
    """Refuses to replace a non-empty `out` unless `overwrite`: nothing a
    user wrote is lost by a command run again or with a reused name."""
    if os.path.exists(out) and not overwrite:
        if not os.path.isdir(out) or os.listdir(out):
            raise ValueError(
                f"Output {out!r} already exists; pass --overwrite to "
                f"replace it or choose another --out."
            )


def positive_int(text):
    """An argparse `type`: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
