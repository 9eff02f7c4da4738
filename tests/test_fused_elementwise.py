"""The package's fused layers against Keras's, values and gradients.

Under TensorFlow, GELU and LayerNorm run XLA-fused with hand-written
gradients; under jax, GELU's backward keeps only its input; under torch,
Dense is one `addmm` (or oneDNN's linear). On every backend they must equal
`ops.gelu(approximate=False)`, `keras.layers.LayerNormalization` and
`keras.layers.Dense`.
"""

import keras
import numpy as np
import pytest
from gradient_check import as_numpy
from gradient_check import value_and_grads
from keras import ops

from keras_superclass.layers.fused_dense import Dense
from keras_superclass.layers.fused_elementwise import LayerNormalization
from keras_superclass.layers.fused_elementwise import gelu
from keras_superclass.layers.xla_cpu_forms import forced_kernels
from keras_superclass.models.superclass.superclass_layers import (
    TransformerBlock,
)

BACKEND = keras.backend.backend()


def test_gelu_equals_keras_exact_gelu_with_its_gradient():
    x = np.random.default_rng(0).normal(size=(7, 16)).astype("float32") * 3
    ours, (our_grad,) = value_and_grads(gelu, [x])
    keras_gelu = lambda t: ops.gelu(t, approximate=False)  # noqa: E731
    reference, (reference_grad,) = value_and_grads(keras_gelu, [x])
    np.testing.assert_allclose(ours, reference, atol=2e-6)
    np.testing.assert_allclose(our_grad, reference_grad, atol=5e-6)


@pytest.mark.skipif(
    BACKEND != "jax",
    reason="jax's path: XLA's autodiff of GELU keeps its derivative terms; "
    "TensorFlow's and torch's gradients keep only the input",
)
def test_jax_gelu_keeps_less_for_backward_than_keras_gelu():
    import jax

    rows, width, layers = 256, 512, 4
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 128)).astype("float32")
    weights = [
        (
            rng.normal(size=(128, width)).astype("float32"),
            rng.normal(size=(width, 128)).astype("float32"),
        )
        for _ in range(layers)
    ]

    def temporaries(activation):
        def loss(weights, x):
            for w_in, w_out in weights:
                x = x + ops.matmul(activation(ops.matmul(x, w_in)), w_out)
            return ops.sum(x)

        compiled = jax.jit(jax.grad(loss)).lower(weights, x).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    saved = temporaries(lambda t: ops.gelu(t, approximate=False))
    saved -= temporaries(gelu)
    # Keras's GELU keeps two derivative terms per layer beyond the input;
    # with XLA merging the backward `erf` into the forward, one.
    assert saved >= 1.5 * layers * rows * width * 4


def _layer_pair(policy="float32", **kwargs):
    rng = np.random.default_rng(2)
    layers = (
        LayerNormalization(epsilon=1e-5, dtype=policy, **kwargs),
        keras.layers.LayerNormalization(epsilon=1e-5, dtype=policy, **kwargs),
    )
    gamma = rng.normal(size=16).astype("float32")
    beta = rng.normal(size=16).astype("float32")
    for layer in layers:
        layer.build((7, 16))
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    return layers


def _norm_with_weights(layer):
    """LayerNorm as a function of (x, gamma, beta) for the gradients."""

    def function(x, gamma, beta):
        outputs, _ = layer.stateless_call([gamma, beta], [], x)
        return outputs

    return function


def test_layer_norm_equals_keras_with_gradients_for_weights():
    ours, keras_norm = _layer_pair()
    x = np.random.default_rng(0).normal(size=(7, 16)).astype("float32") * 2
    weights = [as_numpy(ours.gamma), as_numpy(ours.beta)]
    out, grads = value_and_grads(_norm_with_weights(ours), [x, *weights])
    ref, ref_grads = value_and_grads(
        _norm_with_weights(keras_norm), [x, *weights]
    )
    np.testing.assert_allclose(out, ref, atol=2e-6)
    for grad, ref_grad in zip(grads, ref_grads):
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=2e-5)


def test_layer_norm_equals_keras_on_every_backend_and_rank():
    ours, keras_norm = _layer_pair()
    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(ours(x)),
        ops.convert_to_numpy(keras_norm(x)),
        atol=2e-6,
    )


def test_mixed_bfloat16_keeps_the_compute_dtype():
    ours, keras_norm = _layer_pair("mixed_bfloat16")
    x = np.random.default_rng(0).normal(size=(7, 16)).astype("float32")
    x = ops.cast(x, "bfloat16")
    out = ours(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(
        ops.convert_to_numpy(ops.cast(out, "float32")),
        ops.convert_to_numpy(ops.cast(keras_norm(x), "float32")),
        atol=2e-2,
    )
    activated = gelu(x)
    assert keras.backend.standardize_dtype(activated.dtype) == "bfloat16"


def test_layer_norm_config_round_trips_and_blocks_use_it():
    layer = LayerNormalization(epsilon=1e-6)
    restored = LayerNormalization.from_config(layer.get_config())
    assert restored.epsilon == 1e-6
    block = TransformerBlock(16, 2, 32)
    block.build((1, 5, 16))
    assert isinstance(block.ln_1, LayerNormalization)
    assert isinstance(block.ln_2, LayerNormalization)
    for dense in (block.attn.in_proj, block.attn.out_proj, block.c_fc):
        assert isinstance(dense, Dense)


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="the XLA-fused path is TensorFlow's; jax and torch run Keras's",
)
def test_tensorflow_runs_both_directions_as_xla_functions():
    # Without XLA each elementwise op would be its own kernel: the traced
    # step must call jit-compiled functions forward and backward.
    import tensorflow as tf

    layer, _ = _layer_pair()

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(gelu(layer(x)))
        return tape.gradient(loss, [x, layer.gamma.value])

    graph = step.get_concrete_function(tf.TensorSpec((7, 16), tf.float32)).graph
    library = graph.as_graph_def().library.function
    compiled = {
        f.signature.name
        for f in library
        if f.attr.get("_XlaMustCompile") and f.attr["_XlaMustCompile"].b
    }
    names = " ".join(sorted(compiled))
    for part in ("gelu_forward", "gelu_backward", "norm_forward"):
        assert part in names, names
    assert "norm_backward" in names, names


def _dense_pair(policy="float32", **kwargs):
    layers = (
        Dense(6, dtype=policy, **kwargs),
        keras.layers.Dense(6, dtype=policy, **kwargs),
    )
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(16, 6)).astype("float32")
    bias = rng.normal(size=6).astype("float32")
    for layer in layers:
        layer.build((None, 16))
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    return layers


@pytest.mark.parametrize("shape", [(7, 16), (2, 3, 16)])
def test_dense_equals_keras_dense_with_gradients(shape):
    ours, keras_dense = _dense_pair(activation="gelu")
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    weights = [as_numpy(ours.kernel), as_numpy(ours.bias)]

    def with_weights(layer):
        def function(x, kernel, bias):
            return layer.stateless_call([kernel, bias], [], x)[0]

        return function

    out, grads = value_and_grads(with_weights(ours), [x, *weights])
    ref, ref_grads = value_and_grads(with_weights(keras_dense), [x, *weights])
    assert out.shape == (*shape[:-1], 6)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    for grad, ref_grad in zip(grads, ref_grads):
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-4)


def test_dense_mixed_bfloat16_and_lora_match_keras():
    ours, keras_dense = _dense_pair("mixed_bfloat16")
    x = np.random.default_rng(0).normal(size=(7, 16)).astype("float32")
    out = ours(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(
        as_numpy(out), as_numpy(keras_dense(x)), rtol=2e-2, atol=5e-2
    )
    ours, keras_dense = _dense_pair()
    for layer in (ours, keras_dense):
        layer.enable_lora(2)
        layer.lora_kernel_a.assign(np.full((16, 2), 0.5, "float32"))
        layer.lora_kernel_b.assign(np.ones((2, 6), "float32"))
    np.testing.assert_allclose(
        as_numpy(ours(x)), as_numpy(keras_dense(x)), rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(as_numpy(ours(x)), as_numpy(_dense_pair()[0](x)))


@pytest.mark.skipif(
    BACKEND != "torch",
    reason="torch's path: jax's XLA fuses the add itself, and TensorFlow's "
    "tf.nn.bias_add measured no faster, so both run Keras's Dense",
)
def test_torch_dense_adds_its_bias_inside_the_matmul():
    import torch

    ours, _ = _dense_pair()
    kernel, bias = (
        torch.tensor(as_numpy(w), requires_grad=True)
        for w in (ours.kernel, ours.bias)
    )
    for shape in ((7, 16), (2, 3, 16)):
        x = np.ones(shape, "float32")
        # MKL's path (oneDNN's, where faster: tests/test_torch_linear.py).
        with forced_kernels(True):
            out = ours.stateless_call([kernel, bias], [], x)[0]
        # One addmm (nn.Linear's op), not a matmul then a broadcast add.
        assert "Addmm" in out.grad_fn.name() or any(
            "Addmm" in fn.name()
            for fn, _ in out.grad_fn.next_functions
            if fn is not None
        ), out.grad_fn


@pytest.mark.skipif(BACKEND != "jax", reason="inspects jax's gradient jaxpr")
def test_jax_dense_and_layer_norm_sum_weight_gradients_by_matmul():
    import jax

    dense, _ = _dense_pair()
    norm, _ = _layer_pair()
    x = np.ones((2, 5, 16), "float32")

    def loss(x, kernel, bias, gamma, beta):
        h = norm.stateless_call([gamma, beta], [], x)[0]
        out = dense.stateless_call([kernel, bias], [], h)[0]
        return jax.numpy.sum(out)

    def sums_in_gradient():
        weights = [dense.kernel.value, dense.bias.value]
        weights += [norm.gamma.value, norm.beta.value]
        grad = jax.grad(loss, argnums=(1, 2, 3, 4))
        text = str(jax.make_jaxpr(grad)(x, *weights))
        # Sums over the rows (the weights' gradients) reduce axes (0, 1).
        return text.count("axes=(0, 1)")

    with forced_kernels(False):  # what a CPU gets
        assert sums_in_gradient() == 0
    with forced_kernels(True):
        assert sums_in_gradient() >= 2
