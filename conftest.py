"""Test set-up shared by the test suite and the docstring examples.

Run once per backend: `KERAS_BACKEND=jax|tensorflow|torch pytest`. The
normal run collects `tests/` and the `>>>` examples in `keras_superclass/`.
"""

import os
import sys

# Import the checkout under test, not another installed copy.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# open_clip imports Triton, which crashes a process that already loaded
# TensorFlow; the parity tests need no Triton (CPU only).
if "triton" not in sys.modules:
    sys.modules["triton"] = None

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_reset():
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    # Names every docstring example may use without importing them.
    doctest_namespace.update(np=np, keras=keras, tf=tf)
