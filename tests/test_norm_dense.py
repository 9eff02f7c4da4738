"""`norm_dense` against Keras's `Dense(LayerNormalization(x))`: values,
gradients and what it keeps from forward to backward.

On every backend it must equal Keras's own LayerNorm then Dense, with all
five gradients, and keep only the norm's input (not its output).
"""

import keras
import numpy as np
import pytest
from gradient_check import as_numpy
from gradient_check import value_and_grads
from keras import ops

from keras_superclass.layers import attention as attention_module
from keras_superclass.layers import norm_dense as norm_dense_module
from keras_superclass.layers.attention import MultiHeadSelfAttention
from keras_superclass.layers.fused_elementwise import LayerNormalization
from keras_superclass.layers.norm_dense import norm_dense
from keras_superclass.layers.xla_cpu_forms import forced_kernels
from keras_superclass.models.superclass import superclass_layers

BACKEND = keras.backend.backend()
WIDTH = 16


def _pair(policy="float32", norm_class=LayerNormalization, width=WIDTH):
    """A built norm and `Dense(6)` with random weights (epsilon 1e-5)."""
    rng = np.random.default_rng(3)
    norm = norm_class(epsilon=1e-5, dtype=policy)
    norm.build((None, width))
    norm.gamma.assign(1 + 0.3 * rng.normal(size=width).astype("float32"))
    norm.beta.assign(0.3 * rng.normal(size=width).astype("float32"))
    dense = keras.layers.Dense(6, dtype=policy)
    dense.build((None, width))
    dense.kernel.assign(rng.normal(size=(width, 6)).astype("float32"))
    dense.bias.assign(rng.normal(size=6).astype("float32"))
    return norm, dense


def _keras_norm_like(norm):
    """Keras's own LayerNormalization, built like `norm`."""
    keras_norm = keras.layers.LayerNormalization(
        epsilon=norm.epsilon, dtype=norm.dtype_policy
    )
    keras_norm.build((None, norm.gamma.shape[0]))
    return keras_norm


def _as_function(norm, dense, call, reference=False):
    """`call(norm, dense, x)` as a function of `(x, *weights)`, the
    weights `norm`'s and `dense`'s; `reference`: Keras's LayerNorm with
    those weights takes `norm`'s place."""
    variables = [norm.gamma, norm.beta, dense.kernel, dense.bias]
    weights = [as_numpy(v) for v in variables]
    if reference:
        norm = _keras_norm_like(norm)
        variables[:2] = [norm.gamma, norm.beta]

    def function(x, *values):
        mapping = list(zip(variables, values))
        with keras.StatelessScope(state_mapping=mapping):
            return call(norm, dense, x)

    return function, weights


def _written(norm, dense, x):
    return dense(norm(x))


@pytest.fixture
def fused(monkeypatch):
    """The epsilons of the calls that took the fused path."""
    calls = []
    backend_function = norm_dense_module._backend_function
    monkeypatch.setattr(
        norm_dense_module,
        "_backend_function",
        lambda eps: calls.append(eps) or backend_function(eps),
    )
    return calls


@pytest.mark.parametrize("shape", [(7, WIDTH), (2, 3, WIDTH)])
@pytest.mark.parametrize("native", [True, False])
def test_equals_keras_norm_then_dense_with_all_gradients(shape, native):
    norm, dense = _pair()
    x = (np.random.default_rng(0).normal(size=shape) * 2 + 1).astype("float32")
    function, weights = _as_function(norm, dense, norm_dense)
    # Native: MKL under torch, XLA's sums under jax; else the CPU forms.
    with forced_kernels(native):
        out, grads = value_and_grads(function, [x, *weights])
    reference, _ = _as_function(norm, dense, _written, reference=True)
    ref, ref_grads = value_and_grads(reference, [x, *weights])
    assert out.shape == (*shape[:-1], 6)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert len(grads) == 5
    for grad, ref_grad in zip(grads, ref_grads):
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-4)


# A `bfloat16` policy keeps the weights in bf16 too (the norm still
# computes in float32).
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "bfloat16"])
def test_bfloat16_equals_keras_norm_then_dense(fused, policy):
    norm, dense = _pair(policy)

    def in_bfloat16(call):
        return lambda norm, dense, x: call(norm, dense, ops.cast(x, "bfloat16"))

    x = np.random.default_rng(0).normal(size=(7, WIDTH)).astype("float32")
    function, weights = _as_function(norm, dense, in_bfloat16(norm_dense))
    out, grads = value_and_grads(function, [x, *weights])
    assert fused
    reference, _ = _as_function(
        norm, dense, in_bfloat16(_written), reference=True
    )
    ref, ref_grads = value_and_grads(reference, [x, *weights])
    np.testing.assert_allclose(out, ref, rtol=2e-2, atol=1e-1)
    for grad, ref_grad in zip(grads, ref_grads):
        scale = np.abs(ref_grad).max()
        np.testing.assert_allclose(grad, ref_grad, atol=3e-2 * scale)
    bf16 = norm_dense(norm, dense, ops.cast(x, "bfloat16"))
    assert keras.backend.standardize_dtype(bf16.dtype) == "bfloat16"


def test_other_cases_run_dense_of_norm_as_written(fused):
    x = np.random.default_rng(0).normal(size=(7, WIDTH)).astype("float32")
    keras_norm, dense = _pair(norm_class=keras.layers.LayerNormalization)
    uncentred = LayerNormalization(center=False)
    uncentred.build((None, WIDTH))
    relu = keras.layers.Dense(6, activation="relu")
    relu.build((None, WIDTH))
    ours, _ = _pair()
    for norm, layer in ((keras_norm, dense), (uncentred, dense), (ours, relu)):
        np.testing.assert_allclose(
            as_numpy(norm_dense(norm, layer, x)),
            as_numpy(layer(norm(x))),
            rtol=1e-5,
            atol=1e-5,
        )
    assert not fused
    unbuilt = LayerNormalization()
    assert tuple(norm_dense(unbuilt, dense, x).shape) == (7, 6)
    assert unbuilt.built and not fused


def test_attention_with_norm_equals_attention_of_norm():
    norm, _ = _pair()
    attention = MultiHeadSelfAttention(WIDTH, 2)
    x = np.random.default_rng(0).normal(size=(2, 5, WIDTH)).astype("float32")
    np.testing.assert_allclose(
        as_numpy(attention(x, norm=norm)),
        as_numpy(attention(norm(x))),
        rtol=1e-5,
        atol=1e-5,
    )


def test_transformer_blocks_fuse_both_norms(monkeypatch):
    calls = []

    def counted(norm, dense, x):
        calls.append((norm.name, dense.name))
        return norm_dense(norm, dense, x)

    for module in (superclass_layers, attention_module):
        monkeypatch.setattr(module, "norm_dense", counted)
    block = superclass_layers.TransformerBlock(WIDTH, 2, 32)
    block(np.zeros((1, 5, WIDTH), "float32"))
    assert calls == [("ln_1", "in_proj"), ("ln_2", "c_fc")]


def _wide_pair(rows=256, width=512, policy="float32"):
    norm, dense = _pair(policy, width=width)
    x = np.random.default_rng(0).normal(size=(rows, width)).astype("float32")
    return norm, dense, x


@pytest.mark.skipif(BACKEND != "jax", reason="reads XLA's memory analysis")
def test_jax_keeps_one_buffer_less_per_pair():
    import jax

    norm, dense, x = _wide_pair()
    layers = 4
    w_out = np.random.default_rng(1).normal(size=(6, x.shape[1]))
    w_out = (w_out * 0.05).astype("float32")

    def temporaries(call):
        function, weights = _as_function(norm, dense, call)

        def loss(x, w_out, *weights):
            # A pre-LN residual stack: x + dense(norm(x)) @ w_out.
            for _ in range(layers):
                x = x + ops.matmul(function(x, *weights), w_out)
            return ops.sum(x)

        grad = jax.jit(jax.grad(loss, argnums=tuple(range(6))))
        compiled = grad.lower(x, w_out, *weights).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    saved = temporaries(_written) - temporaries(norm_dense)
    # At least one norm output (`x.size` floats) fewer; had XLA scheduled
    # the recomputation in forward, it would keep more, not less.
    assert saved >= x.size * 4, saved


@pytest.mark.skipif(BACKEND != "torch", reason="torch's saved-tensor hooks")
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("native", [True, False])
def test_torch_saves_the_input_not_the_norm_output(native, policy):
    import torch

    norm, dense, x = _wide_pair(policy=policy)
    dtype = getattr(torch, dense.compute_dtype)

    def saved_bytes(call):
        sizes = []

        def pack(tensor):
            sizes.append(tensor.numel() * tensor.element_size())
            return tensor

        rows = torch.tensor(x, dtype=dtype, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            call(norm, dense, rows)
        return sum(sizes)

    with forced_kernels(native):  # MKL or oneDNN (float32)
        saved = saved_bytes(_written) - saved_bytes(norm_dense)
    assert saved >= x.size * dtype.itemsize, saved


@pytest.mark.skipif(
    BACKEND != "tensorflow", reason="inspects TensorFlow's gradient graph"
)
def test_tensorflow_recomputes_the_norm_only_once_the_gradient_arrives():
    import tensorflow as tf

    norm, dense, x = _wide_pair(rows=8)

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(norm_dense(norm, dense, x))
        return tape.gradient(loss, x)

    graph = gradient.get_concrete_function(tf.constant(x)).graph
    calls = [
        op
        for op in graph.get_operations()
        if op.type in ("PartitionedCall", "StatefulPartitionedCall")
        if "norm_forward" in op.get_attr("f").name
    ]
    # Forward, and in backward again behind the gradient.
    assert len(calls) == 2, calls
    waiting = [op for op in calls if op.inputs[0].op.control_inputs]
    assert len(waiting) == 1, calls


@pytest.mark.skipif(BACKEND != "torch", reason="torch's double backward")
def test_torch_second_derivative_matches():
    import torch

    norm, dense, x = _wide_pair(rows=8, width=16)

    def second(call):
        rows = torch.tensor(x, requires_grad=True)
        (first,) = torch.autograd.grad(
            call(norm, dense, rows).pow(2).sum(), rows, create_graph=True
        )
        (result,) = torch.autograd.grad(first.pow(2).sum(), rows)
        return result.numpy()

    np.testing.assert_allclose(
        second(norm_dense),
        second(_written),
        rtol=1e-4,
        atol=1e-4,
    )
