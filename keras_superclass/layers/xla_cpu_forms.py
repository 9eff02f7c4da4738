"""Which kernels run: the backend's own or forms XLA runs fast on a CPU.

On a CPU, XLA (jax; TensorFlow for what Keras compiles there) runs some
ops inside a whole training step far below the machine's speed: grouped
and depthwise convolutions as generic loops, and large sums over rows (a
bias or norm gradient, BatchNorm's statistics) as reduce-window loops.
Layers of this package then take other forms of the same math:
`convolutions.py`, `batch_normalization.py`, and under jax the Dense and
LayerNorm gradients (`fused_dense.py`, `fused_elementwise.py`), and
their bfloat16 products in the one form XLA:CPU has bf16 kernels for
(`matmul`). PyTorch's
float32 Dense on a CPU may take oneDNN's matmuls instead of MKL's where
they measure faster (`torch_linear.py`). What each bought:
`benchmarks/README.md`.
"""

import contextlib

import numpy as np

from keras_superclass.utils.xla_flags import cpu_bf16_dots_in_ynnpack
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


def ynnpack_bf16_dots():
    """Whether jax's CPU forms apply and XLA gives bf16 dots to YNNPACK
    (`utils/xla_flags.choose_cpu_matmuls`); read when a layer is traced."""
    return jax_cpu_forms() and cpu_bf16_dots_in_ynnpack()


def copied_transpose(a):
    """`a` with its last two axes swapped, as a row gather of the swapped
    view: XLA keeps it as an array of its own (a plain transpose it folds
    into the dot's dimensions, which YNNPACK then refuses)."""
    import jax.numpy as jnp

    identity = np.arange(a.shape[-1], dtype=np.int32)
    return jnp.take(jnp.swapaxes(a, -1, -2), identity, axis=-2, mode="clip")


def product_and_sums(a, b):
    """`a^T @ b` and `b`'s column sums, from one bf16 YNNPACK dot.

    A Dense's kernel and bias gradients, `x^T g` and `sum(g)`: `a` is
    copied transposed (`copied_transpose`, as `matmul` does) with a row of
    ones under it, so the sums come out of the same product, accumulated
    in float32. XLA's own sum of a bf16 `g` writes a float32 copy of it
    first: for S/16's qkv and first MLP projections (`g` 1,152 and 1,536
    wide) the backward took 0.8-1.4 ms less; for 384-wide `g` it measured
    no faster.

    Args:
        a: bf16 `(m, k)`.
        b: bf16 `(m, n)`.

    Returns:
        float32 `(k, n)` and `(n,)`.

    Example:
    >>> import jax.numpy as jnp
    >>> b = jnp.arange(6, dtype=jnp.bfloat16).reshape(3, 2)
    >>> product, sums = product_and_sums(jnp.ones((3, 2), jnp.bfloat16), b)
    >>> product.tolist(), sums.tolist()
    ([[6.0, 9.0], [6.0, 9.0]], [6.0, 9.0])
    """
    import jax.numpy as jnp

    ones = jnp.ones((1, a.shape[0]), a.dtype)
    a_t = jnp.concatenate([copied_transpose(a), ones], axis=0)
    both = matmul(a_t, b, ynnpack=True)
    return both[:-1], both[-1]


def rearranged(x, select):
    """`x`'s elements rearranged as one gather: an array XLA keeps as its
    own, where a transpose it would fold into the next dot.

    Args:
        x: a jax array; its first axis (a batch axis) stays.
        select: maps a NumPy array of `x`'s positions over its other axes
            to the wanted arrangement (indexing, transposes).

    Returns:
        `(x.shape[0], *select(positions).shape)`.
    """
    import jax.numpy as jnp

    positions = np.arange(int(np.prod(x.shape[1:]))).reshape(x.shape[1:])
    index = np.asarray(select(positions), np.int32)
    flat = x.reshape(x.shape[0], -1)
    return jnp.take(flat, index, axis=1, mode="clip")


def matmul(a, b, transpose_a=False, transpose_b=False, ynnpack=False):
    """`a @ b` of jax arrays (optionally with their last two axes
    swapped), in the form XLA:CPU's YNNPACK kernels take when `ynnpack`
    and both are bfloat16; then the result is float32.

    YNNPACK takes a bf16 dot only with a float32 result and row-major,
    untransposed operands (`xla/backends/cpu/ynn_support.cc`); XLA
    computes every other bf16 dot in float32, at about half the speed
    (`benchmarks/README.md`, seventeenth pass). Leading axes are batch
    axes.

    Mind a transpose of the result: XLA folded the transpose of a 2-D
    result back into the dot after giving the dot to YNNPACK, and the
    step failed when it ran ("Unsupported element type for DotThunk").
    Attention's transposed results, cast and stacked in the same fusion,
    run; `tests/test_ynnpack_bf16.py` compiles and runs a whole block.

    Args:
        a: `(..., m, k)`, or `(..., k, m)` with `transpose_a`.
        b: `(..., k, n)`, or `(..., n, k)` with `transpose_b`.
        transpose_a: swap `a`'s last two axes first.
        transpose_b: swap `b`'s last two axes first.
        ynnpack: take YNNPACK's form (`ynnpack_bf16_dots()` says where).

    Returns:
        `(..., m, n)`: float32 in YNNPACK's form, else `a`'s dtype.
    """
    import jax.numpy as jnp
    from jax import lax

    bf16 = a.dtype == jnp.bfloat16 and b.dtype == jnp.bfloat16
    if not (ynnpack and bf16):
        a = jnp.swapaxes(a, -1, -2) if transpose_a else a
        return a @ (jnp.swapaxes(b, -1, -2) if transpose_b else b)
    a = copied_transpose(a) if transpose_a else a
    b = copied_transpose(b) if transpose_b else b
    batch = tuple(range(a.ndim - 2))
    dimensions = (((a.ndim - 1,), (a.ndim - 2,)), (batch, batch))
    return lax.dot_general(a, b, dimensions, preferred_element_type=jnp.float32)
