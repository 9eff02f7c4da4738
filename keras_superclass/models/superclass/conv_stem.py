"""CatLIP's convolutional patch embedding (corenet's ViT conv stem)."""

import keras
from keras import ops

from keras_superclass.layers.batch_normalization import BatchNormalization

# Strides of the three convs per patch size (output stride).
_STRIDES = {16: (4, 2, 2), 8: (2, 2, 2)}
_KERNELS = (4, 2, 2)


def _kaiming_normal_fan_out():
    # corenet's "kaiming_normal" conv init: torch kaiming_normal_(fan_out),
    # gain sqrt(2): std = sqrt(2 / (k * k * out_channels)).
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


@keras.saving.register_keras_serializable(package="keras_superclass")
class ConvStem(keras.layers.Layer):
    """Three-conv patchify stem of corenet's ViT (CatLIP).

    `conv 4x4/4 (pad 1, no bias) -> BN -> GELU -> conv 2x2/2 (no bias) -> BN
    -> GELU -> conv 2x2/2 (bias)`, with stem width `max(32, hidden_dim // 4)`,
    maps images `(B, H, W, C)` to `(B, H/16, W/16, hidden_dim)`. As corenet's
    `ConvLayer2d`, the first conv pads one pixel on every side (padding
    `int((k - 1) / 2)`) and the 2x2 convs do not pad. BatchNorm as PyTorch's
    defaults (momentum 0.1, i.e. Keras momentum 0.9, eps 1e-5); exact GELU;
    convs initialised with Kaiming normal (fan out), biases zero.

    `patch_size=8` gives corenet's output stride 8 (strides 2, 2, 2).

    Sub-layers and their corenet names: `conv_0` / `norm_0` =
    `patch_emb.0.block.{conv,norm}`, `conv_1` / `norm_1` =
    `patch_emb.1.block.*`, `conv_2` = `patch_emb.2.block.conv`.

    Args:
        hidden_dim: output channels (the ViT width `D`).
        patch_size: 16 (or 8): total stride of the stem.

    Example:
    >>> stem = ConvStem(hidden_dim=192, patch_size=16)
    >>> tuple(stem(keras.ops.zeros((2, 32, 32, 3))).shape)
    (2, 2, 2, 192)
    """

    def __init__(self, hidden_dim, patch_size=16, **kwargs):
        super().__init__(**kwargs)
        if int(patch_size) not in _STRIDES:
            raise ValueError(
                f"The conv stem supports patch sizes {sorted(_STRIDES)} "
                f"(output stride 16 or 8), got {patch_size}. Use "
                f"`stem='patch'` for other patch sizes."
            )
        self.hidden_dim = int(hidden_dim)
        self.patch_size = int(patch_size)
        self.stem_dim = max(32, self.hidden_dim // 4)

    def build(self, input_shape):
        policy = self.dtype_policy
        strides = _STRIDES[self.patch_size]
        self.pad_0 = keras.layers.ZeroPadding2D(
            padding=(_KERNELS[0] - 1) // 2, dtype=policy, name="pad_0"
        )
        self.convs = []
        self.norms = []
        shape = self.pad_0.compute_output_shape(input_shape)
        for i, (kernel, stride) in enumerate(zip(_KERNELS, strides)):
            last = i == len(_KERNELS) - 1
            conv = keras.layers.Conv2D(
                self.hidden_dim if last else self.stem_dim,
                kernel,
                strides=stride,
                padding="valid",
                use_bias=last,
                kernel_initializer=_kaiming_normal_fan_out(),
                bias_initializer="zeros",
                dtype=policy,
                name=f"conv_{i}",
            )
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            self.convs.append(conv)
            if not last:
                norm = BatchNormalization(
                    momentum=0.9, epsilon=1e-5, dtype=policy, name=f"norm_{i}"
                )
                norm.build(shape)
                self.norms.append(norm)
        self.built = True

    def call(self, images, training=None):
        x = self.pad_0(images)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.norms):
                x = self.norms[i](x, training=training)
                x = ops.gelu(x, approximate=False)
        return x

    def compute_output_shape(self, input_shape):
        def side(size):
            if size is None:
                return None
            size = (size + 2 * ((_KERNELS[0] - 1) // 2) - _KERNELS[0]) // (
                _STRIDES[self.patch_size][0]
            ) + 1
            for kernel, stride in zip(
                _KERNELS[1:], _STRIDES[self.patch_size][1:]
            ):
                size = (size - kernel) // stride + 1
            return size

        return (
            input_shape[0],
            side(input_shape[1]),
            side(input_shape[2]),
            self.hidden_dim,
        )

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, patch_size=self.patch_size)
        return config
