"""Convolutions in the forms XLA runs fast on a CPU (CRU-Net, ResNeXt).

XLA:CPU lowers a convolution with several feature groups to a slow generic
loop, and Keras sends TensorFlow's grouped convolutions on a CPU to XLA
too: one CRU-Net-56 training step (batch 8, 224 px) took 36-40 s under
jax and TensorFlow against 2.5 s under PyTorch. There the same weights go
through one plain convolution per group, a depthwise kernel through one
multiply-add per tap (XLA fuses them) and, under jax, a 1x1 convolution
through one matmul (`benchmarks/crunet_throughput.py --kernels compare`;
`batch_normalization.py` does the same for BatchNorm). GPUs, TPUs and
PyTorch keep their native kernels.
"""

import keras
from keras import ops

from keras_superclass.layers.xla_cpu_forms import jax_cpu_forms
from keras_superclass.layers.xla_cpu_forms import native_kernels_are_faster


def _known_spatial_size(inputs):
    return None not in tuple(inputs.shape[1:3])


def pointwise_conv(inputs, kernel, strides=1):
    """A 1x1 `ops.conv` (`"valid"`) of NHWC `inputs` with a
    `(1, 1, cin, cout)` kernel; under jax on a CPU as one matmul.

    Example:
    >>> x = np.random.rand(2, 5, 5, 3).astype("float32")
    >>> kernel = np.random.rand(1, 1, 3, 4).astype("float32")
    >>> native = keras.ops.conv(x, kernel, strides=2)
    >>> bool(np.allclose(native, pointwise_conv(x, kernel, 2), atol=1e-5))
    True
    """
    as_matmul = jax_cpu_forms() and _known_spatial_size(inputs)
    if not as_matmul:
        return ops.conv(inputs, kernel, strides=strides)
    if strides != 1:
        inputs = inputs[:, ::strides, ::strides, :]
    height, width, channels = inputs.shape[1:]
    rows = ops.reshape(inputs, (-1, channels))
    outputs = ops.matmul(rows, ops.reshape(kernel, (channels, -1)))
    return ops.reshape(outputs, (-1, height, width, kernel.shape[-1]))


def grouped_conv(inputs, kernel, groups, strides=1, padding="valid"):
    """`ops.conv` of NHWC `inputs` with a `(kh, kw, cin / groups, cout)`
    kernel in `groups` groups, as one plain convolution per group.

    Example:
    >>> x = np.random.rand(1, 6, 6, 4).astype("float32")
    >>> kernel = np.random.rand(3, 3, 2, 4).astype("float32")
    >>> native = keras.ops.conv(x, kernel)
    >>> split = grouped_conv(x, kernel, groups=2)
    >>> bool(np.allclose(native, split, atol=1e-5))
    True
    """
    if groups == 1:
        return ops.conv(inputs, kernel, strides=strides, padding=padding)
    pieces = zip(
        ops.split(inputs, groups, axis=-1), ops.split(kernel, groups, axis=-1)
    )
    return ops.concatenate(
        [ops.conv(x, k, strides=strides, padding=padding) for x, k in pieces],
        axis=-1,
    )


def depthwise_conv(inputs, kernel, strides=1):
    """`ops.depthwise_conv(..., padding="valid")` of NHWC `inputs` with a
    `(kh, kw, channels, 1)` kernel; on a CPU under XLA as one multiply-add
    per kernel tap.

    Example:
    >>> x = np.random.rand(2, 7, 7, 3).astype("float32")
    >>> kernel = np.random.rand(3, 3, 3, 1).astype("float32")
    >>> native = keras.ops.depthwise_conv(x, kernel, strides=2)
    >>> taps = depthwise_conv(x, kernel, strides=2)
    >>> bool(np.allclose(native, taps, atol=1e-5))
    True
    """
    if native_kernels_are_faster() or not _known_spatial_size(inputs):
        return ops.depthwise_conv(inputs, kernel, strides=strides)
    if kernel.shape[-1] != 1:
        raise ValueError(
            f"depthwise_conv takes a depth multiplier of 1, got kernel "
            f"shape {tuple(kernel.shape)}."
        )
    size_h, size_w = kernel.shape[0], kernel.shape[1]
    out_h = (inputs.shape[1] - size_h) // strides + 1
    out_w = (inputs.shape[2] - size_w) // strides + 1
    output = None
    for i in range(size_h):
        for j in range(size_w):
            tap = inputs[
                :,
                i : i + strides * (out_h - 1) + 1 : strides,
                j : j + strides * (out_w - 1) + 1 : strides,
                :,
            ]
            term = tap * kernel[i, j, :, 0]
            output = term if output is None else output + term
    return output


@keras.saving.register_keras_serializable(package="keras_superclass")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (NHWC, no dilation) whose grouped and 1x1
    forms run as `grouped_conv` and `pointwise_conv`: same weights, same
    results, faster under XLA on a CPU.

    Example:
    >>> layer = Conv2D(8, 3, groups=4)
    >>> tuple(layer(keras.ops.zeros((1, 5, 5, 8))).shape)
    (1, 3, 3, 8)
    """

    def convolution_op(self, inputs, kernel):
        plain = (
            native_kernels_are_faster()
            or self.data_format != "channels_last"
            or tuple(self.dilation_rate) != (1, 1)
            or self.strides[0] != self.strides[1]
        )
        if plain:
            return super().convolution_op(inputs, kernel)
        if tuple(self.kernel_size) == (1, 1) and self.groups == 1:
            return pointwise_conv(inputs, kernel, self.strides[0])
        if self.groups > 1:
            return grouped_conv(
                inputs,
                kernel,
                self.groups,
                strides=self.strides[0],
                padding=self.padding,
            )
        return super().convolution_op(inputs, kernel)
