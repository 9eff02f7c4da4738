"""Python functions inside tf.data graphs that cannot hang the exit.

A `tf.numpy_function` call still running when the interpreter shuts down
deadlocks it: the iterator's destructor (run by the finalising main thread,
which holds the GIL) waits for the call, and the call waits for the GIL.
tf.data keeps calling while it refills its prefetch buffers, so a script
that stops reading a dataset and ends straight away hits this often.

`numpy_function` here is `tf.numpy_function` with the calls counted; an
`atexit` hook (which runs before finalisation, while the GIL can still be
taken) waits until no call is running and none has started for a moment:
the buffers are full and the pipelines idle, so the iterators die cleanly.
"""

import atexit
import threading
import time

import tensorflow as tf

# Quiet time after the last call before the exit goes on, and the most the
# exit waits (a pipeline that never idles must not keep it forever).
_QUIET_SECONDS = 0.25
_MAX_WAIT_SECONDS = 30.0

_lock = threading.Lock()
_running = 0
_last_call = 0.0


def _counted(fn):
    def call(*args):
        global _running, _last_call
        with _lock:
            _running += 1
            _last_call = time.monotonic()
        try:
            return fn(*args)
        finally:
            with _lock:
                _running -= 1
                _last_call = time.monotonic()

    return call


def numpy_function(fn, inputs, output_types, stateful=False):
    """`tf.numpy_function(fn, inputs, output_types, stateful)`, counted
    so that the interpreter's exit waits for running calls."""
    return tf.numpy_function(
        _counted(fn), inputs, output_types, stateful=stateful
    )


def py_function(fn, inputs, output_types):
    """`tf.py_function(fn, inputs, output_types)`, counted likewise."""
    return tf.py_function(_counted(fn), inputs, output_types)


def wait_until_idle(quiet_seconds=_QUIET_SECONDS, timeout=_MAX_WAIT_SECONDS):
    """Blocks until no counted call runs and none started for
    `quiet_seconds` (at most `timeout` s). Returns whether it got there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _lock:
            idle = _running == 0 and (
                time.monotonic() - _last_call >= quiet_seconds
            )
        if idle:
            return True
        time.sleep(0.02)  # Releases the GIL: the running calls finish.
    return False


def _wait_at_exit():
    if _last_call:  # Only processes that ran a call wait.
        wait_until_idle()


atexit.register(_wait_at_exit)
