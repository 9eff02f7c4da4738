"""jax's GPU attention path: odd lengths padded for cuDNN, else XLA's.

No GPU here: the padding runs through jax's XLA kernel (the same
sequence-length masks cuDNN takes), and the layer's fallback is checked
with `on_gpu` forced, where cuDNN cannot run. The GPU figures are in
`benchmarks/README.md`.
"""

import functools
import logging

import keras
import numpy as np
import pytest
from keras import ops

from keras_superclass.layers.attention import explicit_attention

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="a jax-only path (jax on a GPU); the other backends' fused "
    "attention is Keras's own",
)


def _qkv(length=7):
    rng = np.random.default_rng(0)
    return rng.normal(size=(2, length, 3, 2, 8)).astype("float32")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [7, 8])
def test_padded_attention_matches_explicit_with_gradients(causal, length):
    import jax

    from keras_superclass.layers.jax_gpu_attention import flash_attention

    qkv = _qkv(length)
    weights = np.random.default_rng(1).normal(size=(2, length, 2, 8))

    def padded(qkv):
        q, k, v = (qkv[:, :, i] for i in range(3))
        out = flash_attention(q, k, v, causal, implementation="xla")
        return (out * weights).sum(), out

    def explicit(qkv):
        out = explicit_attention(qkv, causal=causal)
        return (out * weights).sum(), out

    (_, got), got_grad = jax.value_and_grad(padded, has_aux=True)(qkv)
    (_, want), want_grad = jax.value_and_grad(explicit, has_aux=True)(qkv)
    assert got.shape == (2, length, 2, 8)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.isfinite(got_grad).all()
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-5)


def test_unsupported_inputs_return_none_or_raise_when_required():
    from keras_superclass.layers.jax_gpu_attention import flash_attention

    q = np.ones((1, 5, 2, 8), "float32")  # float32, and no cuDNN here
    assert flash_attention(q, q, q) is None
    with pytest.raises(RuntimeError, match="cuDNN"):
        flash_attention(q, q, q, required=True)


def test_layer_on_a_gpu_pads_for_cudnn_or_asks_xla_quietly(monkeypatch, caplog):
    from keras_superclass.layers import attention
    from keras_superclass.layers import jax_gpu_attention

    # As on a GPU: the fused path, and jax's GPU branch of it.
    monkeypatch.setattr(attention, "jax_or_tensorflow_on_cpu", lambda: False)
    monkeypatch.setattr(jax_gpu_attention, "on_gpu", lambda: True)
    fallbacks = []
    keras_attention = ops.dot_product_attention

    def keras_fused(*args, **kwargs):
        fallbacks.append(kwargs["flash_attention"])
        return keras_attention(*args, **kwargs)

    monkeypatch.setattr(attention.ops, "dot_product_attention", keras_fused)
    layer = attention.MultiHeadSelfAttention(hidden_dim=16, num_heads=2)
    x = np.random.default_rng(2).normal(size=(2, 5, 16)).astype("float32")
    with caplog.at_level(logging.INFO):
        # cuDNN cannot run here: XLA's attention, asked for directly
        # (Keras would log a failed cuDNN attempt with its traceback).
        fallback = ops.convert_to_numpy(layer(x))
    assert fallbacks == [False]
    assert not [r for r in caplog.records if "Failed" in r.getMessage()]

    calls = []
    padded = functools.partial(
        jax_gpu_attention.flash_attention, implementation="xla"
    )

    def recorded(*args, **kwargs):
        calls.append(args[0].shape)
        return padded(*args, **kwargs)

    monkeypatch.setattr(jax_gpu_attention, "flash_attention", recorded)
    through_padding = ops.convert_to_numpy(layer(x))
    assert calls == [(2, 5, 2, 8)] and fallbacks == [False]
    np.testing.assert_allclose(through_padding, fallback, rtol=1e-5, atol=1e-6)
