"""`gelu_dense` against `Dense(gelu(h))`: values, gradients, what it keeps.

On every backend it must equal Keras's `Dense` after
`ops.gelu(approximate=False)`, with all three gradients, and keep only its
input (not GELU's output) from forward to backward.
"""

import keras
import numpy as np
import pytest
from gradient_check import as_numpy
from gradient_check import value_and_grads
from keras import ops

from keras_superclass.layers import gelu_dense as gelu_dense_module
from keras_superclass.layers.fused_elementwise import gelu
from keras_superclass.layers.gelu_dense import gelu_dense
from keras_superclass.layers.xla_cpu_forms import forced_kernels
from keras_superclass.models.superclass import superclass_layers

BACKEND = keras.backend.backend()


def _dense(policy="float32", **kwargs):
    dense = keras.layers.Dense(6, dtype=policy, **kwargs)
    dense.build((None, 16))
    rng = np.random.default_rng(3)
    dense.kernel.assign(rng.normal(size=(16, 6)).astype("float32"))
    dense.bias.assign(rng.normal(size=6).astype("float32"))
    return dense


def _plain(dense, h):
    return dense(ops.gelu(h, approximate=False))


def _unfused(dense, h):
    return dense(gelu(h))


def _as_function(dense, call):
    """`call(dense, h)` as a function of `(h, kernel, bias)`."""

    def function(h, kernel, bias):
        mapping = [(dense.kernel, kernel), (dense.bias, bias)]
        with keras.StatelessScope(state_mapping=mapping):
            return call(dense, h)

    return function


@pytest.mark.parametrize("shape", [(7, 16), (2, 3, 16)])
@pytest.mark.parametrize("native", [True, False])
def test_equals_dense_of_gelu_with_all_gradients(shape, native):
    dense = _dense()
    rng = np.random.default_rng(0)
    h = (rng.normal(size=shape) * 2).astype("float32")
    weights = [as_numpy(dense.kernel), as_numpy(dense.bias)]
    # Native: MKL under torch, XLA's sums under jax; else the CPU forms.
    with forced_kernels(native):
        out, grads = value_and_grads(
            _as_function(dense, gelu_dense), [h, *weights]
        )
    ref, ref_grads = value_and_grads(_as_function(dense, _plain), [h, *weights])
    assert out.shape == (*shape[:-1], 6)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    for grad, ref_grad in zip(grads, ref_grads):
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-4)


def test_mixed_bfloat16_equals_dense_of_gelu_with_all_gradients(monkeypatch):
    fused = []
    backend_function = gelu_dense_module._backend_function
    monkeypatch.setattr(
        gelu_dense_module,
        "_backend_function",
        lambda: fused.append(1) or backend_function(),
    )
    dense = _dense("mixed_bfloat16")

    def in_bfloat16(call):
        return lambda dense, h: call(dense, ops.cast(h, "bfloat16"))

    h = np.random.default_rng(0).normal(size=(7, 16)).astype("float32")
    weights = [as_numpy(dense.kernel), as_numpy(dense.bias)]
    out, grads = value_and_grads(
        _as_function(dense, in_bfloat16(gelu_dense)), [h, *weights]
    )
    assert fused
    ref, ref_grads = value_and_grads(
        _as_function(dense, in_bfloat16(_plain)), [h, *weights]
    )
    np.testing.assert_allclose(out, ref, rtol=2e-2, atol=5e-2)
    for grad, ref_grad in zip(grads, ref_grads):
        scale = np.abs(ref_grad).max()
        np.testing.assert_allclose(grad, ref_grad, atol=3e-2 * scale)
    bf16 = gelu_dense(dense, ops.cast(h, "bfloat16"))
    assert keras.backend.standardize_dtype(bf16.dtype) == "bfloat16"


def test_other_cases_run_dense_of_gelu_as_written():
    h = np.random.default_rng(0).normal(size=(7, 16)).astype("float32")
    for kwargs in ({"activation": "relu"}, {"use_bias": False}):
        dense = keras.layers.Dense(6, **kwargs)
        dense.build((None, 16))
        np.testing.assert_allclose(
            as_numpy(gelu_dense(dense, h)), as_numpy(_plain(dense, h)), 1e-5
        )
    unbuilt = keras.layers.Dense(6)
    assert tuple(gelu_dense(unbuilt, h).shape) == (7, 6) and unbuilt.built
    lora = _dense()
    lora.enable_lora(2)
    lora.lora_kernel_b.assign(np.ones((2, 6), "float32"))
    np.testing.assert_allclose(
        as_numpy(gelu_dense(lora, h)), as_numpy(_plain(lora, h)), 1e-5
    )


def test_transformer_blocks_use_it_for_exact_gelu_only(monkeypatch):
    calls = []

    def counted(dense, h):
        calls.append(dense.name)
        return gelu_dense(dense, h)

    monkeypatch.setattr(superclass_layers, "gelu_dense", counted)
    x = np.zeros((1, 5, 16), "float32")
    for activation in ("gelu", "quick_gelu"):
        block = superclass_layers.TransformerBlock(
            16, 2, 32, activation=activation
        )
        block(x)
    assert calls == ["c_proj"]


def _wide_dense(rows=256, width=512, policy="float32"):
    """A `Dense(width -> 128)` and `(rows, width)` pre-activations."""
    dense = keras.layers.Dense(128, dtype=policy)
    dense.build((None, width))
    h = np.random.default_rng(0).normal(size=(rows, width)).astype("float32")
    return dense, h


@pytest.mark.skipif(BACKEND != "jax", reason="reads XLA's memory analysis")
def test_jax_keeps_one_buffer_less_per_layer():
    import jax

    dense, pre = _wide_dense()
    layers = 4
    rng = np.random.default_rng(1)
    w_in = rng.normal(size=(128, pre.shape[1])).astype("float32") * 0.05
    x = rng.normal(size=(pre.shape[0], 128)).astype("float32")
    weights = [as_numpy(dense.kernel), as_numpy(dense.bias)]

    def temporaries(call):
        function = _as_function(dense, call)

        def loss(x, w_in, kernel, bias):
            # A transformer MLP: matmul, then `dense(gelu(.))`, residual.
            for _ in range(layers):
                x = x + function(ops.matmul(x, w_in), kernel, bias)
            return ops.sum(x)

        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
        compiled = grad.lower(x, w_in, *weights).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    # Against the package's GELU (which keeps only its input) then Dense.
    saved = temporaries(_unfused) - temporaries(gelu_dense)
    # At least one GELU output (`pre.size` floats) fewer. Had XLA
    # scheduled the recomputation in forward, it would keep more, not less
    # (what an optimization barrier alone gave).
    assert saved >= pre.size * 4, saved


@pytest.mark.skipif(BACKEND != "torch", reason="torch's saved-tensor hooks")
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("native", [True, False])
def test_torch_saves_the_input_not_the_activation(native, policy):
    import torch

    dense, h = _wide_dense(policy=policy)
    dtype = getattr(torch, dense.compute_dtype)

    def saved_bytes(call):
        sizes = []

        def pack(tensor):
            sizes.append(tensor.numel() * tensor.element_size())
            return tensor

        rows = torch.tensor(h, dtype=dtype, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            call(dense, rows)
        return sum(sizes)

    with forced_kernels(native):  # MKL or oneDNN (float32)
        saved = saved_bytes(_plain) - saved_bytes(gelu_dense)
    assert saved >= h.size * dtype.itemsize, saved


@pytest.mark.skipif(
    BACKEND != "tensorflow", reason="inspects TensorFlow's gradient graph"
)
def test_tensorflow_recomputes_gelu_only_once_the_gradient_arrives():
    import tensorflow as tf

    dense, h = _wide_dense(rows=8)

    @tf.function
    def gradient(h):
        with tf.GradientTape() as tape:
            tape.watch(h)
            loss = tf.reduce_sum(gelu_dense(dense, h))
        return tape.gradient(loss, h)

    graph = gradient.get_concrete_function(tf.constant(h)).graph
    calls = [
        op
        for op in graph.get_operations()
        if op.type in ("PartitionedCall", "StatefulPartitionedCall")
        if "gelu_forward" in op.get_attr("f").name
    ]
    # Forward, and in backward again behind the gradient.
    assert len(calls) == 2, calls
    waiting = [op for op in calls if op.inputs[0].op.control_inputs]
    assert len(waiting) == 1, calls


@pytest.mark.skipif(BACKEND != "torch", reason="torch's double backward")
def test_torch_second_derivative_matches():
    import torch

    dense, h = _wide_dense(rows=8, width=16)

    def second(call):
        rows = torch.tensor(h, requires_grad=True)
        (first,) = torch.autograd.grad(
            call(dense, rows).pow(2).sum(), rows, create_graph=True
        )
        (result,) = torch.autograd.grad(first.pow(2).sum(), rows)
        return result.numpy()

    np.testing.assert_allclose(
        second(gelu_dense), second(_plain), rtol=1e-4, atol=1e-4
    )
