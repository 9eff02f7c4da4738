"""Layers of the image-text model: text embedding, logit scale, pooling."""

import math

import keras
from keras import ops

# OpenCLIP's initial temperature and its clamp (CLIP paper: 1/0.07, 100).
CLIP_LOGIT_SCALE_INIT = math.log(1 / 0.07)
CLIP_MAX_LOGIT_SCALE = 100.0
# SigLIP's initialisation (Zhai et al. 2023; OpenCLIP's SigLIP configs).
SIGLIP_LOGIT_SCALE_INIT = math.log(10.0)
SIGLIP_LOGIT_BIAS_INIT = -10.0


def l2_normalize(x, epsilon=1e-12):
    """`x / max(||x||, eps)` along the last axis (`F.normalize`)."""
    x = ops.cast(x, "float32")
    squares = ops.sum(ops.square(x), axis=-1, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squares, epsilon * epsilon))


@keras.saving.register_keras_serializable(package="keras_superclass")
class ClipValue(keras.constraints.Constraint):
    """Clamps a weight to `[min_value, max_value]` after each update.

    The optimizer applies it after every step, as OpenCLIP's training loop
    clamps `logit_scale` to `[0, log(100)]` after `optimizer.step()`.
    """

    def __init__(self, min_value, max_value):
        self.min_value = float(min_value)
        self.max_value = float(max_value)

    def __call__(self, w):
        return ops.clip(w, self.min_value, self.max_value)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}


@keras.saving.register_keras_serializable(package="keras_superclass")
class LogitScale(keras.layers.Layer):
    """The learnable temperature (and SigLIP bias) of a contrastive model.

    Holds `logit_scale` (a log scale, clamped to `[0, log(max_scale)]` by
    the optimizer) and, when `bias_init` is given, `logit_bias`. Called on
    a `(B, D)` feature batch it returns `exp(logit_scale)` (and the bias)
    repeated to `(B,)`, so they can be model outputs next to the features
    (`predict` concatenates outputs over batches).

    Args:
        scale_init: initial log scale (`log(1/0.07)` for CLIP, `log(10)`
            for SigLIP).
        bias_init: initial bias (`-10` for SigLIP) or `None` for none.
        max_scale: clamp of `exp(logit_scale)` (100 as OpenCLIP).
    """

    def __init__(
        self,
        scale_init=CLIP_LOGIT_SCALE_INIT,
        bias_init=None,
        max_scale=CLIP_MAX_LOGIT_SCALE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.scale_init = float(scale_init)
        self.bias_init = None if bias_init is None else float(bias_init)
        self.max_scale = float(max_scale)

    def build(self, input_shape):
        # Float32 always: bf16 would round log(100) and the learned scale.
        self.logit_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.scale_init),
            constraint=ClipValue(0.0, math.log(self.max_scale)),
            dtype="float32",
            name="logit_scale",
        )
        self.logit_bias = None
        if self.bias_init is not None:
            self.logit_bias = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(self.bias_init),
                dtype="float32",
                name="logit_bias",
            )
        self.built = True

    def call(self, features):
        ones = ops.ones((ops.shape(features)[0],), dtype="float32")
        scale = ones * ops.exp(ops.cast(self.logit_scale, "float32"))
        if self.logit_bias is None:
            return scale
        return scale, ones * ops.cast(self.logit_bias, "float32")

    def compute_output_spec(self, features):
        spec = keras.KerasTensor((features.shape[0],), dtype="float32")
        if self.bias_init is None:
            return spec
        return spec, keras.KerasTensor((features.shape[0],), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            scale_init=self.scale_init,
            bias_init=self.bias_init,
            max_scale=self.max_scale,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_superclass")
class TextEmbedding(keras.layers.Layer):
    """Token embedding + learned positions (OpenCLIP's text input).

    `token_embedding (V, W)` initialised `N(0, 0.02)`, `positional_embedding
    (L, W)` initialised `N(0, 0.01)`, as OpenCLIP. Inputs are `(B, L)` ids
    with `L` equal to `sequence_length`.
    """

    def __init__(self, vocabulary_size, sequence_length, hidden_dim, **kw):
        super().__init__(**kw)
        self.vocabulary_size = int(vocabulary_size)
        self.sequence_length = int(sequence_length)
        self.hidden_dim = int(hidden_dim)

    def build(self, input_shape):
        self.token_embedding = self.add_weight(
            shape=(self.vocabulary_size, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="token_embedding",
        )
        self.positional_embedding = self.add_weight(
            shape=(self.sequence_length, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="positional_embedding",
        )
        self.built = True

    def call(self, token_ids):
        table = ops.cast(self.token_embedding, self.compute_dtype)
        x = ops.take(table, ops.cast(token_ids, "int32"), axis=0)
        positions = ops.cast(self.positional_embedding, self.compute_dtype)
        return x + positions[None]

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            sequence_length=self.sequence_length,
            hidden_dim=self.hidden_dim,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_superclass")
class EndTokenPooling(keras.layers.Layer):
    """Picks each sequence's end-of-text token from `(B, L, W)`.

    `"argmax"`: the position of the largest id (CLIP BPE's EOT, 49407, is
    the largest id), as OpenCLIP's default. `"eos"`: the first position of
    `end_token_id` (tokenizers whose end token is not the largest id).
    """

    def __init__(self, pooling="argmax", end_token_id=None, **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("argmax", "eos"):
            raise ValueError(
                f"`pooling` must be 'argmax' or 'eos', got {pooling!r}."
            )
        if pooling == "eos" and end_token_id is None:
            raise ValueError(
                "`pooling='eos'` needs `end_token_id` (the tokenizer's "
                "end-of-text id)."
            )
        self.pooling = pooling
        self.end_token_id = end_token_id

    def call(self, sequence, token_ids):
        token_ids = ops.cast(token_ids, "int32")
        if self.pooling == "eos":
            token_ids = ops.cast(
                ops.equal(token_ids, self.end_token_id), "int32"
            )
        index = ops.argmax(token_ids, axis=-1)
        index = ops.cast(index, "int32")[:, None, None]
        return ops.take_along_axis(sequence, index, axis=1)[:, 0]

    def compute_output_shape(self, sequence_shape, token_ids_shape):
        return (sequence_shape[0], sequence_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(pooling=self.pooling, end_token_id=self.end_token_id)
        return config
