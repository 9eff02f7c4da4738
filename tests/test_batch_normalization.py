"""The package's BatchNormalization against Keras's: training outputs,
gradients and moving statistics on every backend, with the matmul sums
under jax on a CPU forced on and off."""

import keras
import numpy as np
import pytest
from gradient_check import value_and_grads
from keras import ops

from keras_superclass.layers.batch_normalization import BatchNormalization
from keras_superclass.layers.xla_cpu_forms import forced_kernels

BACKEND = keras.backend.backend()


def _pair(**kwargs):
    ours = BatchNormalization(momentum=0.9, epsilon=1e-3, **kwargs)
    reference = keras.layers.BatchNormalization(
        momentum=0.9, epsilon=1e-3, **kwargs
    )
    for layer in (ours, reference):
        layer.build((None, 5, 5, 6))
    rng = np.random.default_rng(2)
    for variable in ("gamma", "beta", "moving_mean", "moving_variance"):
        value = rng.uniform(0.5, 1.5, size=(6,)).astype("float32")
        getattr(ours, variable).assign(value)
        getattr(reference, variable).assign(value)
    return ours, reference


def _training_step(layer):
    """`(x, gamma, beta) -> (outputs, moving statistics)`, stateless."""
    moving = [layer.moving_mean.value, layer.moving_variance.value]

    def step(x, gamma, beta):
        return layer.stateless_call([gamma, beta], moving, x, training=True)

    return step


@pytest.mark.parametrize("native", [False, True])
def test_jax_training_step_equals_keras_with_gradients(native):
    if BACKEND != "jax":
        pytest.skip("the matmul sums are jax's; elsewhere it is Keras's call")
    ours, reference = _pair()
    rng = np.random.default_rng(0)
    # A large mean against the spread: the variance must not cancel.
    x = (rng.normal(size=(4, 5, 5, 6)) * 0.5 + 30.0).astype("float32")
    inputs = [x, ours.gamma.value, ours.beta.value]
    with forced_kernels(native):
        step = _training_step(ours)
        out, grads = value_and_grads(lambda *a: step(*a)[0], inputs)
        _, moving = step(*inputs)
    ref_step = _training_step(reference)
    ref_out, ref_grads = value_and_grads(lambda *a: ref_step(*a)[0], inputs)
    _, ref_moving = ref_step(*inputs)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-4)
    for grad, ref_grad in zip(grads, ref_grads):
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-3, atol=1e-3)
    for value, ref_value in zip(moving, ref_moving):
        np.testing.assert_allclose(value, ref_value, rtol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="inspects a jaxpr")
def test_jax_training_step_has_no_reductions_over_the_batch():
    import jax

    ours, _ = _pair()
    x = np.ones((4, 5, 5, 6), "float32")
    step = _training_step(ours)

    def loss(x, gamma, beta):
        return jax.numpy.sum(step(x, gamma, beta)[0] ** 2)

    def jaxpr():
        grad = jax.grad(loss, argnums=(0, 1, 2))
        return str(jax.make_jaxpr(grad)(x, ours.gamma.value, ours.beta.value))

    with forced_kernels(False):
        # Only the loss's own sum; statistics and gradients are matmuls.
        assert jaxpr().count("reduce_sum") == 1
    with forced_kernels(True):
        assert jaxpr().count("reduce_sum") > 1


def test_moving_statistics_and_inference_equal_keras():
    ours, reference = _pair()
    x = np.random.default_rng(1).normal(size=(3, 5, 5, 6)).astype("float32")
    with forced_kernels(False):  # the matmul sums wherever they apply
        out = ours(x, training=True)
    ref_out = reference(x, training=True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(out), ops.convert_to_numpy(ref_out), atol=1e-5
    )
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(
            ops.convert_to_numpy(getattr(ours, name)),
            ops.convert_to_numpy(getattr(reference, name)),
            rtol=1e-5,
        )
    np.testing.assert_allclose(
        ops.convert_to_numpy(ours(x, training=False)),
        ops.convert_to_numpy(reference(x, training=False)),
        atol=1e-6,
    )


def test_mixed_bfloat16_keeps_keras_dtypes():
    ours, reference = _pair(dtype="mixed_bfloat16")
    x = np.random.default_rng(3).normal(size=(2, 5, 5, 6)).astype("float32")
    x = ops.cast(x, "bfloat16")
    with forced_kernels(False):
        out = ours(x, training=True)
    ref_out = reference(x, training=True)
    assert ops.dtype(out) == ops.dtype(ref_out) == "bfloat16"
    np.testing.assert_allclose(
        ops.convert_to_numpy(ops.cast(out, "float32")),
        ops.convert_to_numpy(ops.cast(ref_out, "float32")),
        atol=3e-2,
    )


def test_config_round_trips():
    layer = BatchNormalization(momentum=0.8, epsilon=1e-5, name="bn")
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(restored) is BatchNormalization
    assert restored.get_config() == layer.get_config()
