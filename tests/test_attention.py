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


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TensorFlow's path (a custom gradient); jax's has its own test, "
    "and torch runs the fused kernel",
)
def test_tensorflow_recomputes_probabilities_with_the_same_gradients():
    import tensorflow as tf

    from keras_superclass.layers.attention import MultiHeadSelfAttention
    from keras_superclass.layers.fused_dense import tokens_as_rows

    layer = MultiHeadSelfAttention(hidden_dim=16, num_heads=2)
    layer.build((2, 5, 16))
    x = tf.random.stateless_normal((2, 5, 16), seed=(1, 2))

    def kept(x):  # the same layer without recomputation
        qkv = ops.reshape(layer.in_proj(tokens_as_rows(x)), (2, 5, 3, 2, 8))
        out = ops.reshape(explicit_attention(qkv), (10, 16))
        return ops.reshape(layer.out_proj(out), (2, 5, 16))

    def gradients(function):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.square(function(x)))
            return tape.gradient(loss, [x, *layer.trainable_variables])

        return step

    ours, reference = gradients(layer), gradients(kept)
    for got, expected in zip(ours(x), reference(x)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    def softmax_count(step):
        graph = step.get_concrete_function(x).graph.as_graph_def()
        nodes = list(graph.node)
        for function in graph.library.function:
            nodes += list(function.node_def)
        return sum(node.op == "Softmax" for node in nodes)

    # Forward once, and once more in backward.
    assert softmax_count(reference) == 1
    assert softmax_count(ours) == 2


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TensorFlow's path: a custom gradient that recomputes",
)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tensorflow_attention_equals_explicit_attention_with_gradients(
    causal, dtype
):
    import tensorflow as tf

    from keras_superclass.layers.attention import _tf_attention

    rng = np.random.default_rng(0)
    qkv = tf.cast(rng.normal(size=(2, 7, 3, 4, 8)), dtype)
    weights = rng.normal(size=(2, 7, 4, 8)).astype("float32")

    def traced(attention):
        @tf.function
        def step(qkv):
            with tf.GradientTape() as tape:
                tape.watch(qkv)
                out = attention(qkv)
                loss = tf.reduce_sum(tf.cast(out, "float32") * weights)
            return out, tape.gradient(loss, qkv)

        return step

    ours = traced(_tf_attention(causal))
    autodiff = traced(lambda t: explicit_attention(t, causal))
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    for got, expected in zip(ours(qkv), autodiff(qkv)):
        expected = np.asarray(tf.cast(expected, "float32"))
        scale = np.abs(expected).max()
        got = np.asarray(tf.cast(got, "float32"))
        np.testing.assert_allclose(got, expected, atol=tolerance * scale)

    # The recomputation waits for the incoming gradient (run as soon as
    # qkv exists, it would keep the scores from forward to backward).
    graph = ours.get_concrete_function(qkv).graph
    waiting = [
        op
        for op in graph.get_operations()
        if op.type == "Identity"
        and op.inputs[0].op.type == "Placeholder"
        and op.control_inputs
    ]
    assert waiting, "the recomputation does not wait for the gradient"


def _jax_values_and_grads(attention, qkv, weights):
    import jax

    def loss(qkv):
        out = attention(qkv)
        return ops.sum(ops.cast(out, "float32") * weights), out

    (_, out), grad = jax.value_and_grad(loss, has_aux=True)(qkv)
    return [np.asarray(ops.cast(t, "float32")) for t in (out, grad)]


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="jax's path: a custom backward that recomputes the probabilities",
)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "dtype, form",
    [("float32", "xla"), ("bfloat16", "xla"), ("bfloat16", "ynnpack")],
)
def test_jax_attention_equals_explicit_attention_with_gradients(
    causal, dtype, form
):
    from keras_superclass.layers import attention

    function = {
        "xla": attention._jax_attention,
        "ynnpack": attention._jax_ynnpack_attention,  # bf16 products' form
    }[form](causal)
    rng = np.random.default_rng(0)
    qkv = ops.cast(rng.normal(size=(2, 7, 3, 4, 8)), dtype)
    weights = rng.normal(size=(2, 7, 4, 8)).astype("float32")
    ours = _jax_values_and_grads(function, qkv, weights)
    autodiff = _jax_values_and_grads(
        lambda t: explicit_attention(t, causal), qkv, weights
    )
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    for got, expected in zip(ours, autodiff):
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, atol=tolerance * scale)


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="jax's path: what XLA keeps for backward",
)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_jax_attention_keeps_no_probabilities_for_backward(dtype):
    import jax

    from keras_superclass.layers.attention import _jax_attention

    batch, length, heads, head_dim, layers = 4, 128, 4, 16, 4
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * length, heads * head_dim)).astype(dtype)
    projections = [
        rng.normal(size=(heads * head_dim, 3 * heads * head_dim)) * 0.1
        for _ in range(layers)
    ]
    projections = [p.astype(dtype) for p in projections]

    def temporaries(attention):
        def loss(projections, x):
            for w in projections:
                qkv = ops.reshape(
                    ops.matmul(x, w), (batch, length, 3, heads, head_dim)
                )
                x = x + ops.reshape(attention(qkv), x.shape)
            return ops.sum(ops.cast(x, "float32"))

        compiled = jax.jit(jax.grad(loss)).lower(projections, x).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    saved = temporaries(explicit_attention) - temporaries(_jax_attention(False))
    # Autodiff keeps the exponentials and probabilities (XLA computes them
    # in float32 either way); with the recomputation merged into forward's
    # (the backward not tied to the gradient) 0.85 (float32) and -0.09
    # (bfloat16) of these per layer were saved.
    probabilities = batch * heads * length * length * 4
    assert saved >= 1.25 * layers * probabilities


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="jax's path: the layer's traced program",
)
def test_jax_layer_runs_the_custom_backward():
    import jax

    from keras_superclass.layers.attention import MultiHeadSelfAttention

    layer = MultiHeadSelfAttention(hidden_dim=16, num_heads=2)
    layer.build((2, 5, 16))
    program = jax.make_jaxpr(layer)(np.ones((2, 5, 16), "float32"))
    assert "custom_vjp_call" in str(program)
