"""The XLA-on-CPU forms of grouped, depthwise and 1x1 convolutions
(`keras_superclass.layers.convolutions`) against the backends' own kernels:
values and gradients on every backend, which path each backend takes, and
that jax and TensorFlow really leave their slow grouped kernels."""

import keras
import numpy as np
import pytest
from gradient_check import value_and_grads
from keras import ops

from keras_superclass.layers.convolutions import Conv2D
from keras_superclass.layers.convolutions import depthwise_conv
from keras_superclass.layers.convolutions import pointwise_conv
from keras_superclass.layers.xla_cpu_forms import forced_kernels
from keras_superclass.layers.xla_cpu_forms import native_kernels_are_faster
from keras_superclass.utils.xla_flags import jax_or_tensorflow_on_cpu

BACKEND = keras.backend.backend()


def _both_ways(function, inputs):
    with forced_kernels(True):
        native = value_and_grads(function, inputs)
    with forced_kernels(False):
        forms = value_and_grads(function, inputs)
    return native, forms


def _assert_same(native, forms):
    (native_out, native_grads), (out, grads) = native, forms
    np.testing.assert_allclose(out, native_out, rtol=1e-5, atol=1e-5)
    for grad, native_grad in zip(grads, native_grads):
        np.testing.assert_allclose(grad, native_grad, rtol=1e-4, atol=1e-4)


def _random(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype("float32")


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("groups", [1, 4])
def test_conv2d_equals_keras_conv2d_with_gradients(groups, strides):
    # A 3x3 grouped (ResNeXt), a plain 3x3 and 1x1 kernels, stride 1 and 2.
    for kernel_size in (3, 1):
        layer = Conv2D(8, kernel_size, strides=strides, groups=groups)
        layer.build((None, 9, 9, 8))
        kernel = _random(*layer.kernel.shape, seed=1)

        def function(x, kernel, layer=layer):
            return layer.convolution_op(x, kernel) + layer.bias

        native, forms = _both_ways(function, [_random(2, 9, 9, 8), kernel])
        size = (9 - kernel_size) // strides + 1
        assert forms[0].shape == (2, size, size, 8)
        _assert_same(native, forms)


@pytest.mark.parametrize("strides", [1, 2])
def test_depthwise_conv_equals_ops_depthwise_conv_with_gradients(strides):
    native, forms = _both_ways(
        lambda x, k: depthwise_conv(x, k, strides=strides),
        [_random(2, 9, 9, 6), _random(3, 3, 6, 1, seed=1)],
    )
    size = (9 - 3) // strides + 1
    assert forms[0].shape == (2, size, size, 6)
    _assert_same(native, forms)


def test_pointwise_conv_equals_ops_conv_with_gradients():
    native, forms = _both_ways(
        lambda x, k: pointwise_conv(x, k, strides=2),
        [_random(2, 7, 7, 5), _random(1, 1, 5, 3, seed=1)],
    )
    assert forms[0].shape == (2, 4, 4, 3)
    _assert_same(native, forms)


def test_each_backend_takes_the_measured_path():
    if BACKEND == "torch":
        assert native_kernels_are_faster()  # PyTorch's kernels are fast
        return
    if not jax_or_tensorflow_on_cpu():
        pytest.skip("an accelerator is visible: its native kernels are used")
    assert not native_kernels_are_faster()
    with forced_kernels(True):
        assert native_kernels_are_faster()
    assert not native_kernels_are_faster()


@pytest.mark.skipif(
    BACKEND != "jax", reason="inspects a jaxpr; TensorFlow is checked below"
)
def test_jax_grouped_layer_traces_no_grouped_convolution():
    import jax

    layer = Conv2D(8, 3, groups=4, use_bias=False)
    layer.build((None, 6, 6, 8))
    x = np.zeros((1, 6, 6, 8), "float32")
    kernel = layer.kernel.value

    def jaxpr():
        return str(jax.make_jaxpr(layer.convolution_op)(x, kernel))

    with forced_kernels(True):
        assert "feature_group_count=4" in jaxpr()
    with forced_kernels(False):
        assert "feature_group_count=4" not in jaxpr()
    if jax_or_tensorflow_on_cpu():  # the default on a CPU
        assert "feature_group_count=4" not in jaxpr()


@pytest.mark.skipif(
    BACKEND != "tensorflow", reason="inspects a TensorFlow graph"
)
def test_tensorflow_grouped_layer_leaves_the_xla_kernel():
    import tensorflow as tf

    layer = Conv2D(8, 3, groups=4, use_bias=False)
    layer.build((None, 6, 6, 8))

    def op_types(native):
        with forced_kernels(native):
            graph = (
                tf.function(layer.convolution_op)
                .get_concrete_function(
                    tf.TensorSpec((1, 6, 6, 8)), layer.kernel.value
                )
                .graph
            )
        return {op.type for op in graph.get_operations()}

    # Keras compiles TensorFlow's grouped convolution on a CPU with XLA (a
    # nested function call); the forms are plain Conv2D ops.
    calls = {"StatefulPartitionedCall", "PartitionedCall"}
    assert op_types(native=True) & calls
    forms = op_types(native=False)
    assert "Conv2D" in forms
    assert not forms & calls


def test_conv2d_config_round_trips():
    layer = Conv2D(8, 3, strides=2, groups=4, name="conv_b")
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(restored) is Conv2D
    assert restored.get_config() == layer.get_config()
    x = ops.zeros((1, 7, 7, 8))
    assert tuple(restored(x).shape) == (1, 3, 3, 8)
