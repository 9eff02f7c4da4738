"""Layers of CRU-Net: pre-activation ResNeXt units and Collective Residual
Units whose reduction and depthwise kernels are shared across units.

All units are pre-activation: every convolution except the shared depthwise
one reads a `BN -> ReLU` of its input with its own BatchNorm (momentum 0.9,
epsilon 1e-3, as the reference MXNet code). Convolutions have no bias and use
explicit symmetric zero padding with `"valid"` convolutions, so ported
weights line up with MXNet / PyTorch.
"""

import keras
from keras import ops

from keras_superclass.layers.batch_normalization import BatchNormalization
from keras_superclass.layers.convolutions import Conv2D
from keras_superclass.layers.convolutions import depthwise_conv
from keras_superclass.layers.convolutions import pointwise_conv

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3


def conv_initializer():
    """He-normal on the fan-out (as torchvision ResNets), for every conv."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def _batch_norm(name, dtype):
    return BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype, name=name
    )


def _conv(filters, kernel_size, name, dtype, strides=1, groups=1):
    return Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid",
        groups=groups,
        use_bias=False,
        kernel_initializer=conv_initializer(),
        dtype=dtype,
        name=name,
    )


def pad_spatial(x, pad):
    """Symmetric zero padding of the two spatial axes of an NHWC tensor."""
    if not pad:
        return x
    return ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])


def _check_channels(layer, input_shape, expected, what):
    channels = input_shape[-1]
    if channels is None:
        raise ValueError(
            f"{layer.__class__.__name__} '{layer.name}' needs a known channel "
            f"dimension, got input shape {tuple(input_shape)}."
        )
    if expected is not None and channels != expected:
        raise ValueError(
            f"{layer.__class__.__name__} '{layer.name}' has no projection, "
            f"so its input must already have {expected} channels ({what}); "
            f"got {channels}. Pass `project=True` to add one."
        )
    return int(channels)


@keras.saving.register_keras_serializable(package="keras_superclass")
class PreActResNeXtUnit(keras.layers.Layer):
    """Pre-activation ResNeXt bottleneck unit (32x4d style).

    `BN-ReLU -> 1x1 (width) -> BN-ReLU -> grouped 3x3 (width, stride)
    -> BN-ReLU -> 1x1 (filters)`, plus the shortcut: identity, or (with
    `project=True`) a 1x1 at the unit's stride reading its own `BN-ReLU` of
    the input.

    Args:
        filters: output channels.
        width: channels of the bottleneck (grouped) convolution.
        cardinality: groups of the 3x3 convolution; divides `width`.
        strides: stride of the 3x3 convolution and the projection.
        project: use a projection shortcut (needed when the channels or the
            resolution change).

    Example:
    >>> unit = PreActResNeXtUnit(256, 128, cardinality=32, project=True)
    >>> tuple(unit(keras.ops.zeros((1, 8, 8, 64))).shape)
    (1, 8, 8, 256)
    """

    def __init__(
        self,
        filters,
        width,
        cardinality=32,
        strides=1,
        project=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.width = int(width)
        self.cardinality = int(cardinality)
        self.strides = int(strides)
        self.project = bool(project)
        if self.width % self.cardinality:
            raise ValueError(
                f"`width` ({self.width}) must be divisible by `cardinality` "
                f"({self.cardinality}) for the grouped 3x3 convolution."
            )
        if self.strides != 1 and not self.project:
            raise ValueError(
                f"A unit with stride {self.strides} changes the resolution "
                f"and needs `project=True`."
            )
        dtype = self.dtype_policy
        self.bn_a = _batch_norm("bn_a", dtype)
        self.conv_a = _conv(self.width, 1, "conv_a", dtype)
        self.bn_b = _batch_norm("bn_b", dtype)
        self.conv_b = _conv(
            self.width,
            3,
            "conv_b",
            dtype,
            strides=self.strides,
            groups=self.cardinality,
        )
        self.bn_c = _batch_norm("bn_c", dtype)
        self.conv_c = _conv(self.filters, 1, "conv_c", dtype)
        if self.project:
            self.bn_projection = _batch_norm("bn_projection", dtype)
            self.conv_projection = _conv(
                self.filters, 1, "conv_projection", dtype, strides=self.strides
            )

    def build(self, input_shape):
        channels = _check_channels(
            self,
            input_shape,
            None if self.project else self.filters,
            "the identity shortcut",
        )
        shape = (None, None, None, channels)
        self.bn_a.build(shape)
        self.conv_a.build(shape)
        self.bn_b.build((None, None, None, self.width))
        self.conv_b.build((None, None, None, self.width))
        self.bn_c.build((None, None, None, self.width))
        self.conv_c.build((None, None, None, self.width))
        if self.project:
            self.bn_projection.build(shape)
            self.conv_projection.build(shape)

    def call(self, inputs, training=None):
        h = ops.relu(self.bn_a(inputs, training=training))
        h = self.conv_a(h)
        h = ops.relu(self.bn_b(h, training=training))
        h = self.conv_b(pad_spatial(h, 1))
        h = ops.relu(self.bn_c(h, training=training))
        h = self.conv_c(h)
        if self.project:
            shortcut = ops.relu(self.bn_projection(inputs, training=training))
            shortcut = self.conv_projection(shortcut)
        else:
            shortcut = inputs
        return shortcut + h

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            width=self.width,
            cardinality=self.cardinality,
            strides=self.strides,
            project=self.project,
        )
        return config


def _strided_shape(input_shape, strides, channels):
    batch, height, width = input_shape[:3]

    def out(size):
        # k=3, pad 1 and k=1, pad 0 give the same size at any stride.
        return None if size is None else (size - 1) // strides + 1

    return (batch, out(height), out(width), channels)


@keras.saving.register_keras_serializable(package="keras_superclass")
class SharedCRUFactors(keras.layers.Layer):
    """The two kernels a group of Collective Residual Units shares.

    Owns ONE 1x1 reduction kernel `A` (`input_dim -> dim`) and ONE depthwise
    3x3 kernel `G` (`groups = dim`). Every unit of the group holds this same
    layer and applies `G(A(x))` with its own stride, so the kernels are one
    variable each, updated once per step by the sum of the units' gradients.

    Args:
        input_dim: channels the units reduce from (the stage width `bw`).
        dim: the collective dimension `D`.

    Example:
    >>> factors = SharedCRUFactors(1024, 640)
    >>> tuple(factors(keras.ops.zeros((1, 14, 14, 1024)), strides=1).shape)
    (1, 14, 14, 640)
    """

    def __init__(self, input_dim, dim, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.dim = int(dim)

    def build(self, input_shape=None):
        self.reduction_kernel = self.add_weight(
            shape=(1, 1, self.input_dim, self.dim),
            initializer=conv_initializer(),
            name="reduction_kernel",
        )
        self.depthwise_kernel = self.add_weight(
            shape=(3, 3, self.dim, 1),
            initializer=conv_initializer(),
            name="depthwise_kernel",
        )

    def call(self, inputs, strides=1):
        h = pointwise_conv(inputs, self.reduction_kernel)
        return depthwise_conv(
            pad_spatial(h, 1), self.depthwise_kernel, strides=strides
        )

    def compute_output_shape(self, input_shape, strides=1):
        return _strided_shape(input_shape, strides, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(input_dim=self.input_dim, dim=self.dim)
        return config


@keras.saving.register_keras_serializable(package="keras_superclass")
class CollectiveResidualUnit(keras.layers.Layer):
    """Collective Residual Unit (CRU-Net, arXiv 1703.02180).

    With `x` the input and `P` the first unit's own 1x1 projection
    (`cin -> filters`, stride 1):

    - first unit (`project=True`): `p = P(BN-ReLU(x))`; the shortcut is the
      SAME kernel `P` at the unit's stride on its own `BN-ReLU(x)`;
    - other units: `p = x`, identity shortcut;
    - `h = G(A(BN-ReLU(p)))` with the shared factors (`A` 1x1
      `filters -> dim`, `G` depthwise 3x3 at the unit's stride, no BN/ReLU
      between them), then `1x1 (dim -> dim)` and `1x1 (dim -> filters)`,
      each after its own BN-ReLU; `y = shortcut + h`.

    Args:
        filters: output channels (`bw`).
        dim: the collective dimension `D` of the shared factors.
        strides: stride of `G` and of the projection shortcut.
        project: this is the first unit of a stage (owns `P`).
        factors: the `SharedCRUFactors` of the unit's group; by default the
            unit makes its own (no sharing). The sharing itself is structure
            that the enclosing model rebuilds from its config
            (`CRUNetBackbone`); a unit deserialised alone owns its factors.

    Example:
    >>> factors = SharedCRUFactors(1024, 640)
    >>> first = CollectiveResidualUnit(
    ...     1024, 640, strides=2, project=True, factors=factors
    ... )
    >>> second = CollectiveResidualUnit(1024, 640, factors=factors)
    >>> tuple(second(first(keras.ops.zeros((1, 28, 28, 512)))).shape)
    (1, 14, 14, 1024)
    """

    def __init__(
        self,
        filters,
        dim,
        strides=1,
        project=False,
        factors=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.dim = int(dim)
        self.strides = int(strides)
        self.project = bool(project)
        if self.strides != 1 and not self.project:
            raise ValueError(
                f"A unit with stride {self.strides} changes the resolution "
                f"and needs `project=True` (the stage's first unit)."
            )
        if factors is None:
            factors = SharedCRUFactors(
                self.filters, self.dim, dtype=self.dtype_policy, name="factors"
            )
        elif (factors.input_dim, factors.dim) != (self.filters, self.dim):
            raise ValueError(
                f"The shared factors map {factors.input_dim} -> "
                f"{factors.dim} channels but this unit needs {self.filters} "
                f"-> {self.dim}. Share factors only within a group of equal "
                f"`filters` and `dim`."
            )
        self.factors = factors
        dtype = self.dtype_policy
        self.bn_reduce = _batch_norm("bn_reduce", dtype)
        self.bn_mix = _batch_norm("bn_mix", dtype)
        self.conv_mix = _conv(self.dim, 1, "conv_mix", dtype)
        self.bn_expand = _batch_norm("bn_expand", dtype)
        self.conv_expand = _conv(self.filters, 1, "conv_expand", dtype)
        if self.project:
            self.bn_projection = _batch_norm("bn_projection", dtype)
            self.bn_shortcut = _batch_norm("bn_shortcut", dtype)

    def build(self, input_shape):
        channels = _check_channels(
            self,
            input_shape,
            None if self.project else self.filters,
            "the identity shortcut",
        )
        wide = (None, None, None, self.filters)
        if self.project:
            shape = (None, None, None, channels)
            self.bn_projection.build(shape)
            self.bn_shortcut.build(shape)
            self.projection_kernel = self.add_weight(
                shape=(1, 1, channels, self.filters),
                initializer=conv_initializer(),
                name="projection_kernel",
            )
        self.bn_reduce.build(wide)
        if not self.factors.built:
            self.factors.build(wide)
        narrow = (None, None, None, self.dim)
        self.bn_mix.build(narrow)
        self.conv_mix.build(narrow)
        self.bn_expand.build(narrow)
        self.conv_expand.build(narrow)

    def call(self, inputs, training=None):
        if self.project:
            p = ops.relu(self.bn_projection(inputs, training=training))
            p = pointwise_conv(p, self.projection_kernel)
            shortcut = ops.relu(self.bn_shortcut(inputs, training=training))
            shortcut = pointwise_conv(
                shortcut, self.projection_kernel, strides=self.strides
            )
        else:
            p = shortcut = inputs
        h = ops.relu(self.bn_reduce(p, training=training))
        h = self.factors(h, strides=self.strides)
        h = ops.relu(self.bn_mix(h, training=training))
        h = self.conv_mix(h)
        h = ops.relu(self.bn_expand(h, training=training))
        h = self.conv_expand(h)
        return shortcut + h

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            dim=self.dim,
            strides=self.strides,
            project=self.project,
        )
        return config
