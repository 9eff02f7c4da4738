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
