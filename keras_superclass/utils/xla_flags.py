"""XLA settings and choices the package makes for CPU training (jax, TF).

Recent XLA sends float32 matmuls on a CPU to YNNPACK. On the ViT train
step XLA's own matmuls are faster: S/16 at batch 16 took 3.2 s instead of
4.0-4.1 s per step under jax; bfloat16 and tensorflow's XLA (2.8-3.0 s
either way) were unchanged (`benchmarks/train_step.py`, see its README).
The flag only concerns CPU compilation: GPU and TPU runs are unaffected.

XLA reads `XLA_FLAGS` once, before its first compilation, and aborts on a
flag it does not know. So the flag is added only for the XLA builds it was
measured with, only when the user's `XLA_FLAGS` does not set it already,
and only takes effect when the package is imported before the first
computation (as `import keras_superclass` at the top of a script does).
XLA's own default comes back with
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot`.
"""

import importlib.metadata
import os

CPU_MATMUL_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
# The first releases whose XLA knows the flag (both were measured).
_KNOWN_FROM = {"jaxlib": (0, 10), "tensorflow": (2, 21)}


def _version(distribution):
    """`(major, minor)` of an installed distribution, `None` if absent."""
    try:
        text = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def flag_is_known():
    """Whether every installed XLA (jaxlib, tensorflow) accepts the flag."""
    found = False
    for distribution, first in _KNOWN_FROM.items():
        version = _version(distribution)
        if version is None:
            continue
        if version < first:
            return False
        found = True
    return found


def set_cpu_matmul_default(environ=None):
    """Adds `CPU_MATMUL_FLAG` to `XLA_FLAGS` unless the user chose.

    Returns:
        Whether the flag was added.
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return False  # the user's own choice wins
    if not flag_is_known():
        return False
    environ["XLA_FLAGS"] = f"{flags} {CPU_MATMUL_FLAG}".strip()
    return True


def jax_or_tensorflow_on_cpu():
    """Whether the backend is jax or TensorFlow computing on a CPU.

    There XLA (jax; TensorFlow for the ops Keras compiles on a CPU) lacks
    some fused kernels that PyTorch and GPU / TPU libraries have, and a
    few layers take a faster formulation.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() == "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")
    return False
