"""The explicit attention path against Keras's fused one."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_superclass.layers.attention import explicit_attention
from keras_superclass.layers.attention import fused_attention_is_faster


@pytest.mark.parametrize("causal", [False, True])
def test_explicit_attention_equals_dot_product_attention(causal):
    rng = np.random.default_rng(0)
    qkv = rng.normal(size=(2, 7, 3, 4, 8)).astype("float32")
    got = explicit_attention(ops.convert_to_tensor(qkv), causal=causal)
    q, k, v = (qkv[:, :, i] for i in range(3))
    expected = ops.dot_product_attention(q, k, v, is_causal=causal)
    np.testing.assert_allclose(
        ops.convert_to_numpy(got),
        ops.convert_to_numpy(expected),
        rtol=1e-5,
        atol=1e-6,
    )


def test_cpu_path_choice():
    # On this CPU-only machine: fused SDPA under torch, explicit under XLA.
    expected = keras.backend.backend() == "torch"
    assert fused_attention_is_faster() == expected
    assert fused_attention_is_faster(flash_attention=True)


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="inspects PyTorch's autograd graph",
)
def test_fused_path_splits_qkv_without_index_backward():
    # Three `qkv[:, :, i]` index ops cost, in backward, three zero-filled
    # full-size gradients and their sum; one unbind costs one stack.
    from keras_superclass.layers.attention import MultiHeadSelfAttention

    layer = MultiHeadSelfAttention(hidden_dim=16, num_heads=2)
    x = ops.convert_to_tensor(np.ones((2, 5, 16), "float32"))
    x.requires_grad_(True)
    seen, stack = set(), [layer(x).grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(fn for fn, _ in node.next_functions)
    names = {node.name() for node in seen}
    assert "SelectBackward0" not in names, sorted(names)
    assert any(name.startswith("Unbind") for name in names), sorted(names)
