"""`keras.layers.Dense` with its bias add inside the matmul under PyTorch.

Keras's `Dense` computes `matmul(x, kernel)` and then adds the bias as a
separate broadcast op, forward and backward. Under PyTorch that is
`aten::mm` plus `aten::add` over every activation, where `torch.nn.Linear`
runs one `addmm`; here torch runs `torch.nn.functional.linear`, as the
reference does (the whole S/16 step 1.09-1.24x as fast in three paired
runs, 0.1-0.2 GB less memory: `benchmarks/README.md`), on a CPU through
oneDNN where its matmuls measure faster than MKL's (`torch_linear.py`). Under
`mixed_bfloat16` five paired runs gave 0.84-1.01x, so bfloat16 keeps
Keras's `call`, except on a CPU where PyTorch has no bf16 kernels: there
its products run in float32 (`torch_linear.bf16_as_float32`). jax
compiles the step with XLA, which fuses the add by itself, but on a CPU
runs the bias gradient (a sum over every token) as a slow reduce-window
loop: there a hand-written backward takes it as one matrix-vector product
(with the LayerNorm one in `fused_elementwise.py`, the S/16 step 8-12%
faster); in bfloat16 where XLA gives bf16 dots to YNNPACK
(`xla_cpu_forms.matmul`), the same backward with its three products in
YNNPACK's form. Under TensorFlow `tf.nn.bias_add` measured
no faster than Keras's add, so it runs Keras's own `call`.
"""

import functools

import keras
from keras import ops

from keras_superclass.layers import torch_linear
from keras_superclass.layers.xla_cpu_forms import column_sums
from keras_superclass.layers.xla_cpu_forms import jax_cpu_forms
from keras_superclass.layers.xla_cpu_forms import matmul
from keras_superclass.layers.xla_cpu_forms import ynnpack_bf16_dots


def tokens_as_rows(x):
    """`(B, N, D) -> (B * N, D)` before a Dense.

    Same result, but the kernel gradient becomes one plain matmul: XLA on
    CPU runs the 3-D form (two contracting dimensions) several times slower.
    """
    return ops.reshape(x, (-1, x.shape[-1]))


def project(x, kernel):
    """`x @ kernel` for a `(features, units)` kernel, under PyTorch through
    `torch_linear.linear` where bfloat16 runs in float32 there
    (`torch_linear.bf16_as_float32`)."""
    if keras.backend.backend() == "torch" and torch_linear.bf16_as_float32(x):
        return torch_linear.linear(x, kernel.T)
    return ops.matmul(x, kernel)


@keras.saving.register_keras_serializable(package="keras_superclass")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` whose bias add runs inside the matmul (torch,
    float32), with a hand-written backward under jax on a CPU.

    Same weights, config and results (to float32 rounding) as Keras's; LoRA
    (through `self.kernel`) and quantized modes (Keras's `quantized_call`)
    behave as in Keras.

    Example:
    >>> layer = Dense(2, kernel_initializer="ones", bias_initializer="ones")
    >>> y = layer(np.array([[1.0, 2.0, 3.0]], "float32"))
    >>> [float(v) for v in y[0]]
    [7.0, 7.0]
    """

    def build(self, input_shape):
        super().build(input_shape)
        # Decided once, as LayerNormalization does: torch, a bias, float32
        # compute (bfloat16 measured no faster), or bfloat16 where PyTorch
        # has no bf16 kernels (`torch_linear.bf16_as_float32`).
        self._addmm = (
            keras.backend.backend() == "torch"
            and self.bias is not None
            and self.compute_dtype in ("float32", "bfloat16")
        )

    def call(self, inputs, training=None):
        if self._addmm:
            inputs = ops.convert_to_tensor(inputs)
            dtype = keras.backend.standardize_dtype(inputs.dtype)
            if dtype == self.compute_dtype and (
                dtype == "float32" or torch_linear.bf16_as_float32(inputs)
            ):
                return self._linear(inputs)
        if self._bias_gradient_by_matmul(inputs):
            x = _jax_dense()(
                ops.convert_to_tensor(inputs),
                ops.cast(self.kernel, self.compute_dtype),
                ops.cast(self.bias, self.compute_dtype),
            )
            return x if self.activation is None else self.activation(x)
        return super().call(inputs, training=training)

    def _bias_gradient_by_matmul(self, inputs):
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        return (
            self.bias is not None
            and self.compute_dtype == dtype
            and (
                dtype == "float32"
                or dtype == "bfloat16"
                and ynnpack_bf16_dots()
            )
            and not self.lora_enabled
            and self.quantization_mode is None
            and jax_cpu_forms()
        )

    def _linear(self, inputs):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        bias = ops.cast(self.bias, self.compute_dtype)
        # `nn.Linear`'s op (one `addmm` for rows of any leading shape), or
        # oneDNN's.
        x = torch_linear.linear(inputs, kernel.T, bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


# --- jax only ----------------------------------------------------------------


@functools.cache
def _jax_dense():
    """`x @ kernel + bias` whose backward sums the bias gradient by matmul."""
    import jax
    import jax.numpy as jnp

    def product(x, kernel, bias):
        if x.dtype == jnp.float32:
            return x @ kernel + bias
        rows = matmul(x.reshape(-1, x.shape[-1]), kernel, ynnpack=True)
        rows = (rows + bias).astype(kernel.dtype)
        return rows.reshape(*x.shape[:-1], kernel.shape[-1])

    @jax.custom_vjp
    def dense(x, kernel, bias):
        return product(x, kernel, bias)

    def forward(x, kernel, bias):
        return product(x, kernel, bias), (x, kernel)

    def backward(saved, d_out):
        x, kernel = saved
        rows = d_out.reshape(-1, d_out.shape[-1])
        d_kernel = matmul(
            x.reshape(-1, x.shape[-1]), rows, transpose_a=True, ynnpack=True
        ).astype(kernel.dtype)
        if d_out.dtype == jnp.float32:
            (d_bias,) = column_sums(d_out)
        else:
            d_bias = jnp.sum(rows, axis=0)
        d_x = matmul(rows, kernel, transpose_b=True, ynnpack=True)
        d_x = d_x.astype(x.dtype).reshape(x.shape)
        return d_x, d_kernel, d_bias

    dense.defvjp(forward, backward)
    return dense
