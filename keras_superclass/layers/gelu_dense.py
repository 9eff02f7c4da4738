"""`dense(gelu(h))` whose backward keeps only `h`: a ViT MLP's second half.

Autodiff of `dense(gelu(h))` keeps two `(tokens, mlp_dim)` buffers per
block from forward to backward: GELU's input (for its derivative) and
its output (for the kernel gradient). Here only the input is kept and
GELU is recomputed from it in backward, one elementwise pass (the cheap
kind of recomputation Megatron-LM's selective activation recomputation
does). At S/16, batch 16: 18.5 MiB a block; the step's peak memory
160-260 MB lower on every backend, as fast under jax and TensorFlow, 2-5%
slower under PyTorch (`benchmarks/README.md`, thirteenth pass).

It applies to exact GELU into a plain `Dense` (a bias, no activation,
LoRA or quantization) computing in float32 or bfloat16 (`mixed_bfloat16`;
under PyTorch its bf16 step kept 0.3 GB less, fifteenth pass); anything
else, and PyTorch under `torch.compile` (which picks its own
recomputation), runs `dense(gelu(h))` as written.
"""

import functools

import keras
from keras import ops

from keras_superclass.layers import torch_linear
from keras_superclass.layers.fused_dense import tokens_as_rows
from keras_superclass.layers.fused_elementwise import _gelu_derivative
from keras_superclass.layers.fused_elementwise import _normal_cdf
from keras_superclass.layers.fused_elementwise import _tf_kernels
from keras_superclass.layers.fused_elementwise import gelu
from keras_superclass.layers.xla_cpu_forms import column_sums
from keras_superclass.layers.xla_cpu_forms import copied_transpose
from keras_superclass.layers.xla_cpu_forms import jax_cpu_forms
from keras_superclass.layers.xla_cpu_forms import matmul
from keras_superclass.layers.xla_cpu_forms import tied_to_gradient
from keras_superclass.layers.xla_cpu_forms import ynnpack_bf16_dots


def gelu_dense(dense, inputs):
    """`dense(gelu(inputs))`, keeping only `inputs` for the backward pass.

    Args:
        dense: a `keras.layers.Dense` (or this package's `Dense`); built
            by this call if it is not.
        inputs: `(..., features)`, the pre-activation.

    Returns:
        `(..., dense.units)`, equal to `dense(gelu(inputs))`.

    Example:
    >>> dense = keras.layers.Dense(2, kernel_initializer="ones")
    >>> dense.build((None, 3))
    >>> y = gelu_dense(dense, np.array([[1.0, 0.0, -1.0]], "float32"))
    >>> [round(float(v), 4) for v in y[0]]
    [0.6827, 0.6827]
    """
    inputs = ops.convert_to_tensor(inputs)
    if not plain_dense_fuses(dense, inputs):
        return dense(gelu(inputs))
    rows = tokens_as_rows(inputs)
    # As the layer would cast them (also outside its autocast scope).
    kernel = ops.cast(dense.kernel, dense.compute_dtype)
    bias = ops.cast(dense.bias, dense.compute_dtype)
    outputs = _backend_function()(rows, kernel, bias)
    return ops.reshape(outputs, (*ops.shape(inputs)[:-1], dense.units))


def plain_dense_fuses(dense, inputs):
    """Whether a hand-written backward may take `dense`'s place: a built
    plain Dense (bias, no activation, LoRA or quantization) computing in
    float32 or bfloat16, fed its compute dtype, outside `torch.compile`
    (shared with `norm_dense`)."""
    torch = keras.backend.backend() == "torch"
    return (
        dense.built
        and dense.bias is not None
        and dense.activation is keras.activations.linear
        and not dense.lora_enabled
        and dense.quantization_mode is None
        and dense.compute_dtype in ("float32", "bfloat16")
        and keras.backend.standardize_dtype(inputs.dtype) == dense.compute_dtype
        and not (torch and _torch_compiling())
    )


def _torch_compiling():
    import torch

    return torch.compiler.is_compiling()


def _backend_function():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_gelu_dense()
    if backend == "jax":
        return _jax_gelu_dense(jax_cpu_forms(), ynnpack_bf16_dots())
    return _torch_gelu_dense


@functools.cache
def _tf_gelu_dense():
    """GELU runs as the XLA functions of `fused_elementwise`, the matmuls
    as TensorFlow's (oneDNN on a CPU)."""
    import tensorflow as tf

    kernels = _tf_kernels()

    def function(rows, kernel, bias):
        @tf.custom_gradient
        def fused(rows, kernel, bias):
            def grad(d_out):
                # Run early, the recomputed GELU would be kept from
                # forward to backward: it waits for the gradient.
                with tf.control_dependencies([d_out]):
                    activated = kernels.gelu_forward(tf.identity(rows))
                d_activated = tf.matmul(d_out, kernel, transpose_b=True)
                return (
                    kernels.gelu_backward(rows, d_activated),
                    tf.matmul(activated, d_out, transpose_a=True),
                    tf.reduce_sum(d_out, axis=0),
                )

            activated = kernels.gelu_forward(rows)
            return tf.matmul(activated, kernel) + bias, grad

        return fused(rows, kernel, bias)

    return function


@functools.cache
def _jax_gelu_dense(cpu_forms, ynnpack):
    """The bias gradient as a matrix-vector product on a CPU in float32,
    as `fused_dense.Dense`'s; bf16 products as YNNPACK takes them where XLA
    gives them to it (`xla_cpu_forms.matmul`). GELU computes in float32."""
    import jax
    import jax.numpy as jnp

    def activate(rows):
        rows32 = rows.astype(jnp.float32)
        return (rows32 * _normal_cdf(rows32)).astype(rows.dtype)

    @jax.custom_vjp
    def function(rows, kernel, bias):
        product = matmul(activate(rows), kernel, ynnpack=ynnpack)
        return (product + bias).astype(kernel.dtype)

    def forward(rows, kernel, bias):
        return function(rows, kernel, bias), (rows, kernel)

    def backward(saved, d_out):
        rows, kernel = saved
        rows = tied_to_gradient(rows, d_out)  # recomputed in backward
        if ynnpack and rows.dtype == jnp.bfloat16:
            # GELU of rows' transposed copy, in the copy's fusion: else
            # XLA keeps one float32 CDF for this and GELU's derivative,
            # written and read twice (S/16: 31-34 -> 17-19 ms a block).
            activated_t = activate(copied_transpose(rows))
            d_kernel = matmul(activated_t, d_out, ynnpack=ynnpack)
        else:
            d_kernel = matmul(
                activate(rows), d_out, transpose_a=True, ynnpack=ynnpack
            )
        d_kernel = d_kernel.astype(kernel.dtype)
        if cpu_forms and d_out.dtype == jnp.float32:
            (d_bias,) = column_sums(d_out)
        else:
            d_bias = jnp.sum(d_out, axis=0)
        d_activated = matmul(d_out, kernel, transpose_b=True, ynnpack=ynnpack)
        d_activated = d_activated.astype(jnp.float32)
        rows32 = rows.astype(jnp.float32)
        d_rows = d_activated * _gelu_derivative(rows32)
        return d_rows.astype(rows.dtype), d_kernel, d_bias

    function.defvjp(forward, backward)
    return function


def _torch_gelu_dense(rows, kernel, bias):
    """Its products on oneDNN or MKL as `fused_dense.Dense`'s."""
    onednn = torch_linear.use_onednn(rows)
    return _torch_function().apply(rows, kernel.T, bias, onednn)


@functools.cache
def _torch_function():
    import torch
    import torch.nn.functional as F

    class GeluLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, rows, weight, bias, onednn):
            ctx.save_for_backward(rows, weight)
            ctx.onednn = onednn
            return torch_linear.linear(F.gelu(rows), weight, bias, onednn)

        @staticmethod
        def backward(ctx, d_out):
            # Differentiable ops only: a second derivative also works.
            rows, weight = ctx.saved_tensors
            activated = F.gelu(rows)
            d_activated, d_weight = torch_linear.linear_gradients(
                d_out, activated, weight, onednn=ctx.onednn
            )
            d_rows = torch.ops.aten.gelu_backward(d_activated, rows)
            return d_rows, d_weight, d_out.sum(0), None

    return GeluLinear
