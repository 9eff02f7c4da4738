"""The multi-label token head shared by SuperClass, CatLIP and CRU-Net."""

import keras
from keras import ops

from keras_superclass.layers.fused_dense import Dense


def torch_linear_kernel_initializer():
    """PyTorch's default `nn.Linear` weight init: U(+-1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


def torch_linear_bias_initializer(fan_in):
    """PyTorch's default `nn.Linear` bias init: U(+-1/sqrt(fan_in))."""
    limit = 1.0 / float(fan_in) ** 0.5
    return keras.initializers.RandomUniform(-limit, limit)


@keras.saving.register_keras_serializable(package="keras_superclass")
class ResidualMLPBlock(keras.layers.Layer):
    """Pre-LN residual MLP: `x + Dense(GELU(Dense(LN(x))))`.

    Args:
        mlp_ratio: hidden width as a multiple of the input width.
        layer_norm_epsilon: epsilon of the LayerNorm.
    """

    def __init__(self, mlp_ratio=4, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.mlp_ratio = mlp_ratio
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, input_shape):
        width = input_shape[-1]
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="ln"
        )
        self.norm.build(input_shape)
        self.fc = Dense(
            width * self.mlp_ratio,
            kernel_initializer=torch_linear_kernel_initializer(),
            bias_initializer=torch_linear_bias_initializer(width),
            dtype=self.dtype_policy,
            name="fc",
        )
        self.fc.build(input_shape)
        self.proj = Dense(
            width,
            kernel_initializer=torch_linear_kernel_initializer(),
            bias_initializer=torch_linear_bias_initializer(
                width * self.mlp_ratio
            ),
            dtype=self.dtype_policy,
            name="proj",
        )
        self.proj.build((*input_shape[:-1], width * self.mlp_ratio))
        self.built = True

    def call(self, x):
        h = self.fc(self.norm(x))
        h = ops.gelu(h, approximate=False)
        return x + self.proj(h)

    def get_config(self):
        config = super().get_config()
        config.update(
            mlp_ratio=self.mlp_ratio,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_superclass")
class TokenHead(keras.layers.Layer):
    """Multi-label classifier over a token vocabulary.

    `[ResidualMLPBlock] * num_mlp_layers -> LayerNorm -> Dense(vocabulary)`,
    as the reference `MixClsHead`. The output Dense is initialised with
    `normal(std=width**-0.5)` and a zero bias. Logits are returned in the
    compute dtype; losses cast them to float32.

    Args:
        vocabulary_size: number of output classes (tokens or synsets).
        num_mlp_layers: residual MLP blocks before the classifier. The
            reference configs all use 0.
        mlp_ratio: hidden width multiple of those blocks.
        layer_norm_epsilon: epsilon of every LayerNorm.

    Example:
    >>> head = TokenHead(vocabulary_size=100)
    >>> tuple(head(keras.ops.ones((2, 32))).shape)
    (2, 100)
    """

    def __init__(
        self,
        vocabulary_size,
        num_mlp_layers=0,
        mlp_ratio=4,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(vocabulary_size) < 1:
            raise ValueError(
                f"`vocabulary_size` must be a positive integer, got "
                f"{vocabulary_size!r}."
            )
        self.vocabulary_size = int(vocabulary_size)
        self.num_mlp_layers = int(num_mlp_layers)
        self.mlp_ratio = mlp_ratio
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, input_shape):
        width = input_shape[-1]
        self.mlp_blocks = []
        for i in range(self.num_mlp_layers):
            block = ResidualMLPBlock(
                mlp_ratio=self.mlp_ratio,
                layer_norm_epsilon=self.layer_norm_epsilon,
                dtype=self.dtype_policy,
                name=f"mlp_block_{i}",
            )
            block.build(input_shape)
            self.mlp_blocks.append(block)
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="ln"
        )
        self.norm.build(input_shape)
        self.classifier = Dense(
            self.vocabulary_size,
            kernel_initializer=keras.initializers.RandomNormal(
                stddev=float(width) ** -0.5
            ),
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="classifier",
        )
        self.classifier.build(input_shape)
        self.built = True

    def classifier_inputs(self, features):
        """What the output Dense reads: `features` through the MLP blocks
        and the LayerNorm.

        A classifier started by Transfer Init
        (`evaluation.transfer_init.transfer_init_classifier`) reads these,
        as the pretrained synset classifier did.

        Example:
        >>> head = TokenHead(vocabulary_size=100)
        >>> tuple(head.classifier_inputs(keras.ops.ones((2, 32))).shape)
        (2, 32)
        """
        if not self.built:
            self.build(tuple(features.shape))
        x = features
        for block in self.mlp_blocks:
            x = block(x)
        return self.norm(x)

    def call(self, features):
        return self.classifier(self.classifier_inputs(features))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.vocabulary_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            num_mlp_layers=self.num_mlp_layers,
            mlp_ratio=self.mlp_ratio,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config
