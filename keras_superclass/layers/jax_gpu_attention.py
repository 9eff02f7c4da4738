"""cuDNN flash attention for jax on a GPU, at any sequence length.

Backend-specific (jax on a GPU). jax's cuDNN kernel trains only at even
sequence lengths, and a ViT's patches plus its class token make an odd
one (197 at 224 px and patch 16). There Keras's
`ops.dot_product_attention` logs a failed cuDNN attempt, traceback
included, each time the step is traced, and falls back to XLA's unfused
attention. Here an odd sequence gets one zero token, which the sequence
lengths cuDNN takes mask out of every softmax, and loses it again after.
"""

import jax
import jax.numpy as jnp


def on_gpu():
    """Whether jax computes on a GPU (where cuDNN's kernel may exist)."""
    return jax.default_backend() == "gpu"


def flash_attention(
    query, key, value, is_causal=False, required=False, implementation="cudnn"
):
    """`softmax(q k^T / sqrt(Dh)) v` through cuDNN's fused kernel.

    Args:
        query, key, value: `(B, L, H, Dh)`, bfloat16 or float16.
        is_causal: each token attends to itself and earlier ones only.
        required: raise, rather than return `None`, where cuDNN cannot
            run it (no cuDNN, a GPU before Ampere, float32 inputs, ...).
        implementation: jax's kernel; `"xla"` checks the padding on a CPU.

    Returns:
        `(B, L, H, Dh)`, or `None` where cuDNN cannot run it and it is
        not `required`.

    Example:
    >>> q = jnp.ones((1, 3, 2, 8))
    >>> flash_attention(q, q, q, implementation="xla").shape
    (1, 3, 2, 8)
    """
    batch, length = query.shape[0], query.shape[1]
    lengths = {}
    if length % 2:
        widths = ((0, 0), (0, 1), (0, 0), (0, 0))
        query, key, value = (jnp.pad(t, widths) for t in (query, key, value))
        real = jnp.full((batch,), length, "int32")
        lengths = {"query_seq_lengths": real, "key_value_seq_lengths": real}
    try:
        out = jax.nn.dot_product_attention(
            query,
            key,
            value,
            is_causal=is_causal,
            implementation=implementation,
            **lengths,
        )
    except Exception:  # as Keras's own fallback: jax raises several kinds
        # Raised while tracing, by the forward or (under `grad`) by its
        # training rule: the kernel cannot run these inputs here.
        if required:
            raise
        return None
    return out[:, :length]
