"""`dense(norm(x))` whose backward keeps only `x`: LayerNorm into a Dense.

Autodiff of `dense(layer_norm(x))` keeps two `(tokens, width)` buffers per
pair from forward to backward: the norm's input (for its own gradient)
and its output (for the Dense's kernel gradient). Here only the input is
kept and the output is recomputed from it in backward, one elementwise
pass over the row statistics the norm's gradient needs anyway (as
`gelu_dense` does for GELU). A pre-LN transformer block has two such
pairs: `ln_1` into attention's `in_proj` and `ln_2` into the MLP's `c_fc`.
What it bought: `benchmarks/README.md` (fourteenth pass).

It applies to this package's `LayerNormalization` over the last axis
with scale and center, into a Dense `gelu_dense.plain_dense_fuses` takes
(a float32 or bfloat16 compute dtype, `mixed_bfloat16` or `bfloat16`; the
norm computes in float32); anything else runs `dense(norm(x))` as
written.
"""

import functools

import keras
from keras import ops

from keras_superclass.layers import torch_linear
from keras_superclass.layers.fused_dense import tokens_as_rows
from keras_superclass.layers.fused_elementwise import _norm_input_gradient
from keras_superclass.layers.fused_elementwise import _normalized
from keras_superclass.layers.fused_elementwise import _tf_kernels
from keras_superclass.layers.gelu_dense import plain_dense_fuses
from keras_superclass.layers.xla_cpu_forms import column_sums
from keras_superclass.layers.xla_cpu_forms import jax_cpu_forms
from keras_superclass.layers.xla_cpu_forms import matmul
from keras_superclass.layers.xla_cpu_forms import product_and_sums
from keras_superclass.layers.xla_cpu_forms import tied_to_gradient
from keras_superclass.layers.xla_cpu_forms import ynnpack_bf16_dots


def norm_dense(norm, dense, inputs):
    """`dense(norm(inputs))`, keeping only `inputs` for the backward pass.

    Args:
        norm: a `LayerNormalization` of this package (any other layer, or
            an unbuilt one, runs `dense(norm(inputs))`).
        dense: a `keras.layers.Dense` (or this package's `Dense`).
        inputs: `(..., features)`, the norm's input.

    Returns:
        `(..., dense.units)`, equal to `dense(norm(inputs))`.

    Example:
    >>> from keras_superclass.layers.fused_elementwise import (
    ...     LayerNormalization,
    ... )
    >>> norm = LayerNormalization(epsilon=1e-5)
    >>> norm.build((None, 3))
    >>> dense = keras.layers.Dense(1, kernel_initializer="ones")
    >>> dense.build((None, 3))
    >>> x = np.array([[1.0, 2.0, 6.0]], "float32")
    >>> y = norm_dense(norm, dense, x)
    >>> round(float(y[0, 0]), 4)  # a normalised row sums to 0
    0.0
    """
    inputs = ops.convert_to_tensor(inputs)
    if not _applies(norm, dense, inputs):
        return dense(norm(inputs))
    rows = tokens_as_rows(inputs)
    # As the layers would cast them: the norm's weights stay float32.
    gamma = ops.convert_to_tensor(norm.gamma.value)
    beta = ops.convert_to_tensor(norm.beta.value)
    kernel = ops.cast(dense.kernel, dense.compute_dtype)
    bias = ops.cast(dense.bias, dense.compute_dtype)
    function = _backend_function(float(norm.epsilon))
    outputs = function(rows, gamma, beta, kernel, bias)
    return ops.reshape(outputs, (*ops.shape(inputs)[:-1], dense.units))


def _applies(norm, dense, inputs):
    return (
        norm.built
        and getattr(norm, "last_axis_affine", False)
        and norm.compute_dtype == dense.compute_dtype
        and plain_dense_fuses(dense, inputs)
    )


def _backend_function(epsilon):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_norm_dense(epsilon)
    if backend == "jax":
        return _jax_norm_dense(epsilon, jax_cpu_forms(), ynnpack_bf16_dots())
    return functools.partial(_torch_norm_dense, epsilon=epsilon)


@functools.cache
def _tf_norm_dense(epsilon):
    """The norm runs as the XLA functions of `fused_elementwise`, the
    matmuls as TensorFlow's (oneDNN on a CPU)."""
    import tensorflow as tf

    kernels = _tf_kernels()

    def function(rows, gamma, beta, kernel, bias):
        eps = tf.constant(epsilon, tf.float32)

        @tf.custom_gradient
        def fused(rows, gamma, beta, kernel, bias):
            def grad(d_out):
                # Run early, the recomputed output would be kept from
                # forward to backward: it waits for the gradient.
                with tf.control_dependencies([d_out]):
                    normed = kernels.norm_forward(
                        tf.identity(rows), gamma, beta, eps
                    )
                d_normed = tf.matmul(d_out, kernel, transpose_b=True)
                d_rows, d_gamma, d_beta = kernels.norm_backward(
                    rows, gamma, eps, d_normed
                )
                return (
                    d_rows,
                    d_gamma,
                    d_beta,
                    tf.matmul(normed, d_out, transpose_a=True),
                    tf.reduce_sum(d_out, axis=0),
                )

            normed = kernels.norm_forward(rows, gamma, beta, eps)
            return tf.matmul(normed, kernel) + bias, grad

        return fused(rows, gamma, beta, kernel, bias)

    return function


@functools.cache
def _jax_norm_dense(epsilon, cpu_forms, ynnpack):
    """The norm computes in float32; on a CPU in float32 the bias, gamma
    and beta gradients are matrix-vector products, as `fused_dense.Dense`'s
    and `LayerNormalization`'s; bf16 products as YNNPACK takes them where
    XLA gives them to it (`xla_cpu_forms.matmul`)."""
    import jax
    import jax.numpy as jnp

    def sums(*arrays):
        if cpu_forms and arrays[0].dtype == jnp.float32:
            return column_sums(*arrays)
        return tuple(jnp.sum(a, axis=0) for a in arrays)

    @jax.custom_vjp
    def function(rows, gamma, beta, kernel, bias):
        normed = _normalized(rows, epsilon)[0] * gamma + beta
        product = matmul(normed.astype(kernel.dtype), kernel, ynnpack=ynnpack)
        return (product + bias).astype(kernel.dtype)

    def forward(rows, gamma, beta, kernel, bias):
        return function(rows, gamma, beta, kernel, bias), (
            rows,
            gamma,
            beta,
            kernel,
        )

    def backward(saved, d_out):
        rows, gamma, beta, kernel = saved
        rows = tied_to_gradient(rows, d_out)  # recomputed in backward
        x_hat, inverse_std = _normalized(rows, epsilon)
        normed = (x_hat * gamma + beta).astype(kernel.dtype)
        if ynnpack and normed.dtype == d_out.dtype == jnp.bfloat16:
            # The bias gradient out of the kernel gradient's product.
            d_kernel, d_bias = product_and_sums(normed, d_out)
            d_bias = d_bias.astype(d_out.dtype)
        else:
            d_kernel = matmul(normed, d_out, transpose_a=True, ynnpack=ynnpack)
            (d_bias,) = sums(d_out)
        d_kernel = d_kernel.astype(kernel.dtype)
        d_normed = matmul(d_out, kernel, transpose_b=True, ynnpack=ynnpack)
        d_normed = d_normed.astype(jnp.float32)
        d_rows = _norm_input_gradient(d_normed * gamma, x_hat, inverse_std)
        d_gamma, d_beta = sums(d_normed * x_hat, d_normed)
        return d_rows.astype(rows.dtype), d_gamma, d_beta, d_kernel, d_bias

    function.defvjp(forward, backward)
    return function


def _torch_norm_dense(rows, gamma, beta, kernel, bias, epsilon):
    """PyTorch's fused LayerNorm kernels; the products on oneDNN or MKL as
    `fused_dense.Dense`'s."""
    onednn = torch_linear.use_onednn(rows)
    return _torch_function().apply(
        rows, gamma, beta, kernel.T, bias, epsilon, onednn
    )


@functools.cache
def _torch_function():
    import torch

    class NormLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, rows, gamma, beta, weight, bias, epsilon, onednn):
            # The norm computes in float32 (as autocast runs LayerNorm;
            # `.float()` is the tensor itself in float32).
            normed, mean, rstd = torch.native_layer_norm(
                rows.float(),
                [rows.shape[-1]],
                gamma.float(),
                beta.float(),
                epsilon,
            )
            # The row statistics (two floats a row) are kept, not `normed`.
            ctx.save_for_backward(rows, gamma, beta, weight, mean, rstd)
            ctx.onednn = onednn
            normed = normed.to(rows.dtype)
            return torch_linear.linear(normed, weight, bias, onednn)

        @staticmethod
        def backward(ctx, d_out):
            # Differentiable ops only: a second derivative also works.
            rows, gamma, beta, weight, mean, rstd = ctx.saved_tensors
            rows32, gamma32, beta32 = rows.float(), gamma.float(), beta.float()
            normed = torch.addcmul(beta32, (rows32 - mean) * rstd, gamma32)
            normed = normed.to(rows.dtype)
            d_normed, d_weight = torch_linear.linear_gradients(
                d_out, normed, weight, onednn=ctx.onednn
            )
            d_rows, d_gamma, d_beta = torch.ops.aten.native_layer_norm_backward(
                d_normed.float(),
                rows32,
                [rows.shape[-1]],
                mean,
                rstd,
                gamma32,
                beta32,
                [True, True, True],
            )
            d_rows = d_rows.to(rows.dtype)
            d_gamma, d_beta = d_gamma.to(gamma.dtype), d_beta.to(beta.dtype)
            return d_rows, d_gamma, d_beta, d_weight, d_out.sum(0), None, None

    return NormLinear
