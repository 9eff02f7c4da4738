"""Multi-head self-attention with OpenCLIP's fused qkv projection."""

import functools

import keras
import numpy as np
from keras import ops

from keras_superclass.layers.fused_dense import Dense
from keras_superclass.layers.fused_dense import tokens_as_rows
from keras_superclass.layers.norm_dense import norm_dense
from keras_superclass.layers.token_head import torch_linear_kernel_initializer
from keras_superclass.layers.torch_linear import attention_in_float32
from keras_superclass.layers.torch_linear import bf16_as_float32
from keras_superclass.layers.xla_cpu_forms import matmul
from keras_superclass.layers.xla_cpu_forms import rearranged
from keras_superclass.layers.xla_cpu_forms import tied_to_gradient
from keras_superclass.layers.xla_cpu_forms import ynnpack_bf16_dots
from keras_superclass.utils.xla_flags import jax_or_tensorflow_on_cpu


def fused_attention_is_faster(flash_attention=None):
    """Whether `ops.dot_product_attention` is the faster path here.

    It is where a fused kernel exists: PyTorch's SDPA, cuDNN or TPU
    kernels. On a CPU under XLA (jax, tensorflow) it lowers to batched
    einsums with per-head slicing; the explicit form below, one transpose
    to `(B, H, L, Dh)` and two plain batched matmuls, is faster. One
    ViT-S/16 block's attention, forward and backward at batch 16
    (`benchmarks/step_parts.py`): jax 56-73 ms instead of 78-88 ms,
    tensorflow 35 ms instead of 93 ms.
    """
    if flash_attention:
        return True  # the user asked for the fused kernel
    return not jax_or_tensorflow_on_cpu()


def _heads_and_scores(qkv, causal):
    """q (scaled), k, v as `(B, H, L, Dh)` and the float32 scores."""
    q, k, v = ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), 3, axis=0)
    q = q * ops.cast(1.0 / (q.shape[-1] ** 0.5), q.dtype)
    scores = ops.cast(ops.matmul(q, ops.swapaxes(k, -1, -2)), "float32")
    if causal:
        length = ops.shape(scores)[-1]
        allowed = ops.tril(ops.ones((length, length), dtype="bool"))
        scores = ops.where(allowed, scores, -1e9)
    return q, k, v, scores


def explicit_attention(qkv, causal=False):
    """`softmax(q k^T / sqrt(Dh)) v` from packed `(B, L, 3, H, Dh)` inputs.

    Returns `(B, L, H, Dh)`. The scores are normalised in float32, as
    Keras's fused path does under mixed precision.
    """
    _, _, v, scores = _heads_and_scores(qkv, causal)
    weights = ops.cast(ops.softmax(scores, axis=-1), v.dtype)
    return ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))


def _attention_backward(qkv, q, k, v, probs, out, d_out):
    """`d qkv` from recomputed float32 `probs`, the output and its gradient.

    Each row's `dO . O` stands in for the softmax backward's `(B, H, L, L)`
    product (`sum_j P_ij dP_ij`), as flash-attention kernels do.
    """
    to_heads = (0, 2, 1, 3)  # (B, L, H, Dh) <-> (B, H, L, Dh)
    d_out_heads = ops.transpose(d_out, to_heads)
    low_probs = ops.cast(probs, v.dtype)
    d_v = ops.matmul(ops.swapaxes(low_probs, -1, -2), d_out_heads)
    d_probs = ops.matmul(d_out_heads, ops.swapaxes(v, -1, -2))
    row_dot = ops.sum(
        ops.cast(d_out, "float32") * ops.cast(out, "float32"), axis=-1
    )
    row_dot = ops.expand_dims(ops.transpose(row_dot, (0, 2, 1)), -1)
    d_scores = ops.cast(
        probs * (ops.cast(d_probs, "float32") - row_dot), q.dtype
    )
    scale = ops.cast(1.0 / (q.shape[-1] ** 0.5), q.dtype)
    d_q = ops.matmul(d_scores, k) * scale
    d_k = ops.matmul(ops.swapaxes(d_scores, -1, -2), q)
    d_qkv = ops.transpose(ops.stack([d_q, d_k, d_v]), (1, 3, 0, 2, 4))
    return ops.cast(d_qkv, qkv.dtype)


@functools.cache
def _jax_attention(causal):
    """`explicit_attention` whose backward keeps no `(B, H, L, L)` tensor.

    jax only. Autodiff keeps the softmax's exponentials and probabilities
    of every block for backward; this keeps the inputs, the output and the
    rows' log-sum-exp, and recomputes the probabilities in backward, as
    flash-attention kernels do (S/16, batch 16: 85-105 MB less peak
    memory, no slower). Tying the recomputation to the gradient saved a
    further 140-190 MB in float32 and 380-420 MB in bfloat16, and ran 1-18%
    faster (`benchmarks/README.md`, sixteenth pass).
    """
    import jax

    def forward(qkv):
        _, _, v, scores = _heads_and_scores(qkv, causal)
        top = ops.max(scores, axis=-1, keepdims=True)
        exp = ops.exp(scores - top)
        total = ops.sum(exp, axis=-1, keepdims=True)
        out = ops.matmul(ops.cast(exp / total, v.dtype), v)
        out = ops.transpose(out, (0, 2, 1, 3))
        return out, (qkv, out, top + ops.log(total))

    def backward(saved, d_out):
        qkv, out, log_sum_exp = saved
        # Else XLA merges the recomputed scores with forward's and keeps
        # them (S/16: 14 MiB a block in float32, 35 in bfloat16).
        qkv = tied_to_gradient(qkv, d_out)
        q, k, v, scores = _heads_and_scores(qkv, causal)
        probs = ops.exp(scores - log_sum_exp)
        return (_attention_backward(qkv, q, k, v, probs, out, d_out),)

    @jax.custom_vjp
    def attention(qkv):
        return forward(qkv)[0]

    attention.defvjp(forward, backward)
    return attention


@functools.cache
def _jax_ynnpack_attention(causal):
    """`_jax_attention` with every bf16 product in YNNPACK's form.

    jax on a CPU, bf16, with XLA's YNNPACK dots on (`xla_cpu_forms.matmul`):
    the heads are gathered into the layouts the products take untransposed,
    and backward works with the transposed scores `k q^T`, so that the
    gradients of k and v are untransposed products too (one block of S/16
    at batch 16: 61-64 ms instead of 70-73 ms forward and backward).
    """
    import jax
    import jax.numpy as jnp

    def heads(qkv, which, transposed=False):
        # (B, L, 3, H, Dh) -> (B, H, L, Dh), or (B, H, Dh, L) transposed.
        order = (1, 2, 0) if transposed else (1, 0, 2)
        return rearranged(qkv, lambda p: p[:, which].transpose(order))

    def masked(scores, transposed):
        if not causal:
            return scores
        length = scores.shape[-1]
        allowed = np.tril(np.ones((length, length), bool))
        return jnp.where(allowed.T if transposed else allowed, scores, -1e9)

    def product(a, b):
        return matmul(a, b, ynnpack=True)  # float32

    def forward(qkv):
        scale = 1.0 / (qkv.shape[-1] ** 0.5)
        scores = product(heads(qkv, 0), heads(qkv, 1, transposed=True))
        scores = masked(scores * scale, transposed=False)
        top = jnp.max(scores, axis=-1, keepdims=True)
        exp = jnp.exp(scores - top)
        total = jnp.sum(exp, axis=-1, keepdims=True)
        out = product((exp / total).astype(qkv.dtype), heads(qkv, 2))
        out = jnp.transpose(out, (0, 2, 1, 3)).astype(qkv.dtype)
        return out, (qkv, out, top + jnp.log(total))

    def backward(saved, d_out):
        qkv, out, log_sum_exp = saved
        qkv = tied_to_gradient(qkv, d_out)  # as `_jax_attention`
        scale = 1.0 / (qkv.shape[-1] ** 0.5)
        q, k = heads(qkv, 0), heads(qkv, 1)
        to_heads = (1, 0, 2)  # (L, H, Dh) -> (H, L, Dh)
        d_heads = rearranged(d_out, lambda p: p.transpose(to_heads))
        d_heads_t = rearranged(d_out, lambda p: p.transpose(1, 2, 0))
        # Keys along rows: probs^T, and the products below untransposed.
        scores_t = product(k, heads(qkv, 0, transposed=True)) * scale
        scores_t = masked(scores_t, transposed=True)
        probs_t = jnp.exp(scores_t - jnp.swapaxes(log_sum_exp, -1, -2))
        d_v = product(probs_t.astype(qkv.dtype), d_heads)
        d_probs_t = product(heads(qkv, 2), d_heads_t)
        row_dot = jnp.sum(
            d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1
        )  # (B, L, H): each row's dO . O, as `_attention_backward`
        row_dot = jnp.transpose(row_dot, (0, 2, 1))[:, :, None, :]
        d_scores_t = (probs_t * (d_probs_t - row_dot)).astype(qkv.dtype)
        d_k = product(d_scores_t, q) * scale
        d_q_t = product(heads(qkv, 1, transposed=True), d_scores_t) * scale
        d_q = jnp.swapaxes(d_q_t, -1, -2)
        d_qkv = jnp.stack([d_q, d_k, d_v])  # (3, B, H, L, Dh)
        return (jnp.transpose(d_qkv, (1, 3, 0, 2, 4)).astype(qkv.dtype),)

    @jax.custom_vjp
    def attention(qkv):
        return forward(qkv)[0]

    attention.defvjp(forward, backward)
    return attention


@functools.cache
def _tf_attention(causal):
    """`explicit_attention` that recomputes its probabilities in backward.

    TensorFlow only; what `keras.remat` (`tf.recompute_grad`) did, without
    its cost: to hold the recomputation back until backward, it adds a
    zero computed from the incoming gradient to every input, one more pass
    over `(B, L, 3, H, Dh)` per block. A control dependency on the gradient
    does the same for free. S/16, batch 16: about 2% faster a step in
    float32 and bfloat16 (`benchmarks/README.md`, seventh pass).
    """
    import tensorflow as tf

    @tf.custom_gradient
    def attention(qkv):
        out = explicit_attention(qkv, causal)

        def grad(d_out):
            # Run early, the recomputation would keep the scores from
            # forward to backward: it waits for the gradient.
            with tf.control_dependencies([d_out]):
                q, k, v, scores = _heads_and_scores(tf.identity(qkv), causal)
            probs = ops.softmax(scores, axis=-1)
            return _attention_backward(qkv, q, k, v, probs, out, d_out)

        return out, grad

    return attention


def _fused_attention(query, key, value, causal, flash_attention):
    """`ops.dot_product_attention`; under jax on a GPU, cuDNN's at any length.

    Keras tries jax's cuDNN kernel, which trains only at even lengths, and
    logs each failure with a traceback: `jax_gpu_attention` pads an odd
    sequence instead, and where cuDNN cannot run at all (float32, an old
    GPU) XLA's attention is asked for directly.
    """
    if keras.backend.backend() == "jax" and flash_attention is not False:
        from keras_superclass.layers import jax_gpu_attention

        if jax_gpu_attention.on_gpu():
            out = jax_gpu_attention.flash_attention(
                query, key, value, causal, required=bool(flash_attention)
            )
            if out is not None:
                return out
            flash_attention = False
    return ops.dot_product_attention(
        query, key, value, is_causal=causal, flash_attention=flash_attention
    )


@keras.saving.register_keras_serializable(package="keras_superclass")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Self-attention with a fused qkv projection (`nn.MultiheadAttention`).

    One `Dense(3D)` gives q, k and v (OpenCLIP's `in_proj_weight`, stacked
    q, k, v), attention runs through `keras.ops.dot_product_attention`
    (or, on a CPU under XLA, the faster `explicit_attention`, with its
    probabilities recomputed in backward rather than kept), and
    `out_proj` maps back to `D`. Initialisation follows PyTorch: xavier
    uniform in-projection, zero biases for in/out projections. With
    `causal=True` each token attends to itself and earlier tokens only
    (the text tower). `flash_attention`: `None` lets Keras pick the fused
    kernel where the backend has one (cuDNN / TPU / PyTorch SDPA), `True`
    requires it. Called as `layer(x, norm=ln)` it attends over `ln(x)`
    with the norm fused into the qkv projection (`norm_dense.py`: only `x`
    is kept for backward), as a pre-LN block does.

    Example:
    >>> layer = MultiHeadSelfAttention(hidden_dim=8, num_heads=2)
    >>> tuple(layer(np.zeros((1, 3, 8))).shape)
    (1, 3, 8)
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        causal=False,
        flash_attention=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(
                f"`hidden_dim` ({hidden_dim}) must be divisible by "
                f"`num_heads` ({num_heads})."
            )
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.head_dim = self.hidden_dim // self.num_heads
        self.causal = bool(causal)
        self.flash_attention = flash_attention

    def build(self, input_shape):
        self.in_proj = Dense(
            3 * self.hidden_dim,
            kernel_initializer="glorot_uniform",
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="in_proj",
        )
        self.in_proj.build(input_shape)
        self.out_proj = Dense(
            self.hidden_dim,
            kernel_initializer=torch_linear_kernel_initializer(),
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="out_proj",
        )
        self.out_proj.build(input_shape)
        self.built = True

    def call(self, x, norm=None):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        if norm is None:
            qkv = self.in_proj(tokens_as_rows(x))
        else:
            qkv = norm_dense(norm, self.in_proj, tokens_as_rows(x))
        qkv = ops.reshape(
            qkv, (batch, length, 3, self.num_heads, self.head_dim)
        )
        if fused_attention_is_faster(self.flash_attention):
            # One unstack, not three index ops: under torch each index's
            # backward zero-fills and sums a full (B, L, 3, H, Dh) gradient.
            query, key, value = ops.unstack(qkv, 3, axis=2)
            if keras.backend.backend() == "torch" and bf16_as_float32(qkv):
                # SDPA's bf16 kernel is slow there: float32, keeping bf16.
                out = attention_in_float32(query, key, value, self.causal)
            else:
                out = _fused_attention(
                    query, key, value, self.causal, self.flash_attention
                )
        elif keras.backend.backend() == "tensorflow":
            # Recomputes the (B, H, L, L) scores and probabilities in
            # backward rather than keeping them: at S/16, batch 16, 0.34 GB
            # less at the same speed (`benchmarks/README.md`).
            out = _tf_attention(self.causal)(qkv)
        elif (
            ynnpack_bf16_dots()
            and keras.backend.standardize_dtype(qkv.dtype) == "bfloat16"
        ):
            out = _jax_ynnpack_attention(self.causal)(qkv)
        else:  # jax on a CPU
            out = _jax_attention(self.causal)(qkv)
        out = ops.reshape(out, (batch * length, self.hidden_dim))
        return ops.reshape(self.out_proj(out), (batch, length, self.hidden_dim))

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            causal=self.causal,
            flash_attention=self.flash_attention,
        )
        return config
