"""Which kernels run: the backend's own or forms XLA runs fast on a CPU.

On a CPU, XLA (jax; TensorFlow for what Keras compiles there) runs some
ops inside a whole training step far below the machine's speed: grouped
and depthwise convolutions as generic loops, and large sums over rows (a
bias or norm gradient, BatchNorm's statistics) as reduce-window loops.
Layers of this package then take other forms of the same math:
`convolutions.py`, `batch_normalization.py`, and under jax the Dense and
LayerNorm gradients (`fused_dense.py`, `fused_elementwise.py`). PyTorch's
float32 Dense on a CPU may take oneDNN's matmuls instead of MKL's where
they measure faster (`torch_linear.py`). What each bought:
`benchmarks/README.md`.
"""

import contextlib

from keras_superclass.utils.xla_flags import jax_or_tensorflow_on_cpu

_FORCED = []  # set by `forced_kernels`; empty: decide per backend


def forced_choice():
    """`forced_kernels`'s choice inside its block (`True`: native), else
    `None`."""
    return _FORCED[-1] if _FORCED else None


def native_kernels_are_faster():
    """Whether the backend's own kernels are used (not the CPU forms).

    Read when a layer is traced (jax, a `tf.function`) or called (eager).
    """
    forced = forced_choice()
    if forced is not None:
        return forced
    return not jax_or_tensorflow_on_cpu()


def jax_cpu_forms():
    """Whether jax's CPU forms apply: jax, on a CPU, not forced native."""
    import keras

    return keras.backend.backend() == "jax" and not native_kernels_are_faster()


@contextlib.contextmanager
def forced_kernels(native):
    """Uses the backend's own kernels (`native=True`) or the CPU forms
    (`False`) inside the block, whatever the device (PyTorch's CPU Dense:
    MKL or oneDNN): for benchmarks and tests that compare the two.
    """
    _FORCED.append(bool(native))
    try:
        yield
    finally:
        _FORCED.pop()


def column_sums(*arrays):
    """Per-channel sums over all leading axes of jax arrays `(..., C)`,
    all of them in one matrix-vector product (XLA:CPU's own reduction over
    many rows runs as a slow loop inside a step). One sum per array."""
    import jax.numpy as jnp

    channels = arrays[0].shape[-1]
    rows = jnp.concatenate([a.reshape(-1, channels) for a in arrays], axis=1)
    sums = (jnp.ones((1, rows.shape[0]), rows.dtype) @ rows)[0]
    return tuple(jnp.split(sums, len(arrays)))


def tied_to_gradient(x, d_out):
    """`x` plus a zero computed from the gradient `d_out` (jax arrays).

    A custom backward that recomputes from `x` calls this first: XLA then
    can neither run the recomputation in forward nor merge it with forward's
    identical computation, either of which keeps its buffers from forward
    to backward (XLA:CPU drops optimization barriers before scheduling). A
    non-finite first element of `d_out` turns the layer's gradients NaN.
    """
    return x + (0.0 * d_out.reshape(-1)[0]).astype(x.dtype)
