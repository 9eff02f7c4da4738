"""The package's AdamW takes exactly Keras's AdamW steps."""

import keras
import numpy as np
import pytest

from keras_superclass.optimizers import AdamW


def _run(optimizer_cls, steps=4, **kwargs):
    rng = np.random.default_rng(0)
    shapes = [(5, 3), (3,), (7, 2)]
    variables = [
        keras.Variable(rng.normal(size=s).astype("float32"), name=f"v{i}")
        for i, s in enumerate(shapes)
    ]
    schedule = keras.optimizers.schedules.CosineDecay(
        1e-2, decay_steps=10, warmup_target=None
    )
    optimizer = optimizer_cls(
        learning_rate=schedule,
        weight_decay=0.2,
        beta_1=0.9,
        beta_2=0.98,
        epsilon=1e-2,  # large: the epsilon convention must match
        **kwargs,
    )
    optimizer.exclude_from_weight_decay(var_list=[variables[1]])
    grads_rng = np.random.default_rng(1)
    for _ in range(steps):
        grads = [
            keras.ops.convert_to_tensor(grads_rng.normal(size=s), "float32")
            for s in shapes
        ]
        optimizer.apply(grads, variables)
    return [keras.ops.convert_to_numpy(v) for v in variables]


@pytest.mark.parametrize("kwargs", [{}, {"gradient_accumulation_steps": 2}])
def test_same_weights_as_keras_adamw(kwargs):
    # Under torch this compares the fused kernel with Keras's update,
    # weight decay, its exclusions and the epsilon convention included.
    got = _run(AdamW, **kwargs)
    expected = _run(keras.optimizers.AdamW, **kwargs)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_round_trip_config():
    optimizer = AdamW(learning_rate=1e-3, weight_decay=0.05)
    restored = keras.optimizers.deserialize(
        keras.optimizers.serialize(optimizer)
    )
    assert isinstance(restored, AdamW)
    assert restored.weight_decay == 0.05


def _tensorflow_graph_ops(function):
    graph = function.get_concrete_function().graph
    types = {op.type for op in graph.get_operations()}
    for nested in graph._functions.values():
        types |= {op.type for op in nested.graph.get_operations()}
    return types


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TensorFlow's fused kernels inside a tf.function",
)
def test_tensorflow_update_is_fused_and_matches_keras_in_graph():
    import tensorflow as tf

    def run(optimizer_cls):
        variables = [keras.Variable(np.ones((4, 3), "float32") * 0.5)]
        optimizer = optimizer_cls(
            learning_rate=1e-2, weight_decay=0.2, epsilon=1e-2
        )
        optimizer.build(variables)
        grads = [tf.constant(np.linspace(-1, 1, 12).reshape(4, 3), "float32")]

        @tf.function(autograph=False)
        def step():
            optimizer.apply(grads, variables)

        for _ in range(3):
            step()
        return step, keras.ops.convert_to_numpy(variables[0])

    step, got = run(AdamW)
    assert {"ResourceApplyAdam", "ResourceApplyGradientDescent"} <= (
        _tensorflow_graph_ops(step)
    )
    _, expected = run(keras.optimizers.AdamW)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.distribute strategies exist only under TensorFlow",
)
def test_tensorflow_strategy_keeps_keras_path():
    import tensorflow as tf

    def run(optimizer_cls):
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        with strategy.scope():
            variables = [keras.Variable(np.ones((4, 3), "float32"))]
            optimizer = optimizer_cls(learning_rate=1e-2, weight_decay=0.2)
            optimizer.build(variables)
        grads = [tf.constant(np.linspace(-1, 1, 12).reshape(4, 3), "float32")]
        for _ in range(3):
            strategy.run(optimizer.apply, args=(grads, variables))
        return keras.ops.convert_to_numpy(variables[0])

    np.testing.assert_allclose(
        run(AdamW), run(keras.optimizers.AdamW), rtol=1e-6, atol=1e-7
    )


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="torch.compile is what jit_compile=True runs under torch",
)
def test_torch_update_under_torch_compile_matches_keras():
    # `model.compile(jit_compile=True)` under torch runs the train step,
    # the update included, through torch.compile: the fused kernel's
    # list inputs failed its graph capture. AOTAutograd ("aot_eager") is
    # the stage that failed, without Inductor's slow C++ code generation.
    import torch

    class CompiledAdamW(AdamW):
        def apply(self, grads, variables):
            update = super().apply
            return torch.compile(
                lambda: update(grads, variables), backend="aot_eager"
            )()

    got = _run(CompiledAdamW)
    expected = _run(keras.optimizers.AdamW)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
