"""Exact GELU and LayerNorm with hand-written gradients, per backend.

TensorFlow: Keras runs the train step without XLA on a CPU (`jit_compile`
"auto"), so every elementwise op of GELU and LayerNorm, and of their
autodiff gradients, is its own pass over memory: a dozen kernels over each
`(B, L, 4D)` MLP activation. Under TensorFlow these two functions run as
small `jit_compile=True` functions with hand-written gradients (one XLA
fusion forward, one backward), while the matmuls around them stay with
oneDNN (`benchmarks/README.md`: one S/16 block's MLP, 135-141 -> 113-116
ms).

jax: XLA's autodiff of exact GELU computes the derivative's `erf` and
`exp` terms in the forward pass and keeps them for backward, two more
`(B, L, 4D)` buffers per block (at S/16, batch 16: 37 MiB a block, 443
MiB a step). Under jax, GELU keeps only its input and recomputes the
derivative in backward. On a CPU, XLA also runs LayerNorm's gamma / beta
gradients, sums over every token, as slow reduce-window loops inside the
step: under jax there, LayerNorm's backward is hand-written with those
two sums as one matrix-vector product (see `fused_dense.py`). torch has
fused kernels and runs Keras's ops.
"""

import functools
import math
import types

import keras
from keras import ops

from keras_superclass.layers.xla_cpu_forms import column_sums
from keras_superclass.layers.xla_cpu_forms import jax_cpu_forms

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _normal_cdf(x32):
    return 0.5 * (1.0 + ops.erf(x32 * _SQRT_HALF))


def _gelu_derivative(x32):
    """d/dx of `x * Phi(x)`: `Phi(x) + x * phi(x)`, in float32."""
    pdf = ops.exp(-0.5 * x32 * x32) * _INV_SQRT_2PI
    return _normal_cdf(x32) + x32 * pdf


def _normalized(x, epsilon):
    """LayerNorm's `(x_hat, inverse_std)` over the last axis, in float32."""
    x32 = ops.cast(x, "float32")
    centred = x32 - ops.mean(x32, axis=-1, keepdims=True)
    variance = ops.mean(ops.square(centred), axis=-1, keepdims=True)
    inverse_std = ops.rsqrt(variance + epsilon)
    return centred * inverse_std, inverse_std


def _norm_input_gradient(g, x_hat, inverse_std):
    """LayerNorm's input gradient from `g = d_out * gamma` (float32)."""
    return inverse_std * (
        g
        - ops.mean(g, axis=-1, keepdims=True)
        - x_hat * ops.mean(g * x_hat, axis=-1, keepdims=True)
    )


def gelu(x):
    """Exact (erf) GELU, `x * Phi(x)`, as `ops.gelu(x, approximate=False)`.

    Example:
    >>> float(gelu(np.array([1.0], "float32"))[0])  # doctest: +ELLIPSIS
    0.841...
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_kernels().gelu(x)
    if backend == "jax":
        return _jax_gelu()(x)
    return ops.gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="keras_superclass")
class LayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` with an XLA-fused TensorFlow path.

    Same weights, config and results (to float32 rounding); under
    TensorFlow, normalising the last axis with scale and center runs as one
    XLA fusion forward and one backward.

    Example:
    >>> layer = LayerNormalization(epsilon=1e-5)
    >>> y = layer(np.array([[1.0, 2.0, 3.0]], "float32"))
    >>> [round(float(v), 4) for v in y[0]]
    [-1.2247, 0.0, 1.2247]
    """

    def build(self, input_shape):
        super().build(input_shape)
        rank = len(input_shape)
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        # Decided once: the fused path covers the last axis, scale, center.
        # (`norm_dense` fuses such a norm into the Dense after it.)
        self.last_axis_affine = bool(
            [axis % rank for axis in axes] == [rank - 1]
            and self.scale
            and self.center
            and not self.rms_scaling
        )
        backend = keras.backend.backend()
        self._fused = backend == "tensorflow" and self.last_axis_affine
        self._jax_sums_by_matmul = (
            backend == "jax"
            and self.last_axis_affine
            and self.compute_dtype == "float32"
        )

    def call(self, inputs):
        if self._jax_sums_by_matmul and jax_cpu_forms():
            if keras.backend.standardize_dtype(inputs.dtype) == "float32":
                layer_norm = _jax_layer_norm(float(self.epsilon))
                return layer_norm(inputs, self.gamma.value, self.beta.value)
        if not self._fused:
            return super().call(inputs)
        outputs = _tf_kernels().layer_norm(
            inputs, self.gamma.value, self.beta.value, self.epsilon
        )
        return ops.cast(outputs, self.compute_dtype)


@functools.cache
def _tf_kernels():
    """The TensorFlow functions, built once TensorFlow is the backend."""
    import tensorflow as tf

    # Each computes in float32 and returns its inputs' dtypes, as Keras's
    # LayerNorm does under mixed precision.
    @tf.function(jit_compile=True, autograph=False)
    def gelu_forward(x):
        x32 = tf.cast(x, tf.float32)
        return tf.cast(x32 * _normal_cdf(x32), x.dtype)

    @tf.function(jit_compile=True, autograph=False)
    def gelu_backward(x, dy):
        x32 = tf.cast(x, tf.float32)
        dx = tf.cast(dy, tf.float32) * _gelu_derivative(x32)
        return tf.cast(dx, x.dtype)

    @tf.custom_gradient
    def fused_gelu(x):
        return gelu_forward(x), lambda dy: gelu_backward(x, dy)

    @tf.function(jit_compile=True, autograph=False)
    def norm_forward(x, gamma, beta, epsilon):
        x_hat, _ = _normalized(x, epsilon)
        gamma32, beta32 = tf.cast(gamma, tf.float32), tf.cast(beta, tf.float32)
        return tf.cast(x_hat * gamma32 + beta32, x.dtype)

    @tf.function(jit_compile=True, autograph=False)
    def norm_backward(x, gamma, epsilon, dy):
        # Recomputes the statistics rather than keeping them for backward.
        x_hat, inverse_std = _normalized(x, epsilon)
        dy32 = tf.cast(dy, tf.float32)
        dx = _norm_input_gradient(
            dy32 * tf.cast(gamma, tf.float32), x_hat, inverse_std
        )
        rows = list(range(len(dy.shape) - 1))
        dgamma = tf.reduce_sum(dy32 * x_hat, axis=rows)
        dbeta = tf.reduce_sum(dy32, axis=rows)
        return (
            tf.cast(dx, x.dtype),
            tf.cast(dgamma, gamma.dtype),
            tf.cast(dbeta, gamma.dtype),
        )

    def layer_norm(x, gamma, beta, epsilon):
        epsilon = tf.constant(epsilon, tf.float32)
        # Read the variables here: inside, the gradient is for tensors.
        gamma, beta = tf.identity(gamma), tf.identity(beta)

        @tf.custom_gradient
        def fused(x, gamma, beta):
            def grad(dy):
                return norm_backward(x, gamma, epsilon, dy)

            return norm_forward(x, gamma, beta, epsilon), grad

        return fused(x, gamma, beta)

    return types.SimpleNamespace(
        gelu=fused_gelu,
        gelu_forward=gelu_forward,
        gelu_backward=gelu_backward,
        layer_norm=layer_norm,
        norm_forward=norm_forward,
        norm_backward=norm_backward,
    )


@functools.cache
def _jax_gelu():
    """GELU whose backward keeps only its input (jax)."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def fused_gelu(x):
        x32 = x.astype(jnp.float32)
        return (x32 * _normal_cdf(x32)).astype(x.dtype)

    def forward(x):
        return fused_gelu(x), x

    def backward(x, dy):
        # Without the barrier XLA merges this `erf` with the forward's and
        # keeps its result from forward to backward, a buffer per block.
        x32 = jax.lax.optimization_barrier(x).astype(jnp.float32)
        dx = dy.astype(jnp.float32) * _gelu_derivative(x32)
        return (dx.astype(x.dtype),)

    fused_gelu.defvjp(forward, backward)
    return fused_gelu


@functools.cache
def _jax_layer_norm(epsilon):
    """Float32 LayerNorm over the last axis whose backward recomputes the
    statistics and sums gamma's and beta's gradients by matmul (jax)."""
    import jax

    @jax.custom_vjp
    def layer_norm(x, gamma, beta):
        return _normalized(x, epsilon)[0] * gamma + beta

    def forward(x, gamma, beta):
        return layer_norm(x, gamma, beta), (x, gamma)

    def backward(saved, dy):
        x, gamma = saved
        x_hat, inverse_std = _normalized(x, epsilon)
        dx = _norm_input_gradient(dy * gamma, x_hat, inverse_std)
        d_gamma, d_beta = column_sums(dy * x_hat, dy)
        return dx, d_gamma, d_beta

    layer_norm.defvjp(forward, backward)
    return layer_norm
