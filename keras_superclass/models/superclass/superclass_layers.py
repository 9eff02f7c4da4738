"""Layers of the OpenCLIP-style ViT encoder used by SuperClass and CatLIP."""

import keras
from keras import ops

from keras_superclass.layers.attention import MultiHeadSelfAttention
from keras_superclass.layers.fused_dense import Dense
from keras_superclass.layers.fused_dense import project
from keras_superclass.layers.fused_dense import tokens_as_rows
from keras_superclass.layers.fused_elementwise import LayerNormalization
from keras_superclass.layers.gelu_dense import gelu_dense
from keras_superclass.layers.norm_dense import norm_dense
from keras_superclass.layers.token_head import torch_linear_bias_initializer
from keras_superclass.layers.token_head import torch_linear_kernel_initializer


def _torch_conv_initializer():
    # PyTorch's Conv2d default, like nn.Linear: U(+-1/sqrt(fan_in)).
    return torch_linear_kernel_initializer()


MLP_ACTIVATIONS = ("gelu", "quick_gelu")


def quick_gelu(x):
    """OpenAI CLIP's QuickGELU, `x * sigmoid(1.702 x)` (exact GELU runs
    inside `gelu_dense`)."""
    return x * ops.sigmoid(1.702 * x)


@keras.saving.register_keras_serializable(package="keras_superclass")
class PatchEmbedding(keras.layers.Layer):
    """Patchify, prepend the class token, add learned positions.

    A bias-free `Conv2D(kernel=stride=patch_size)` as OpenCLIP's `conv1`; the
    class token and the position table are initialised with
    `width**-0.5 * normal`. The position table is learned for `grid_size`;
    other input sizes get it resized bilinearly.

    Args:
        hidden_dim: token width `D`.
        patch_size: side of the square patches.
        grid_size: `(rows, cols)` of patches the position table is built for.
        use_class_token: prepend a learned class token.
        stem: `"patch"` (one conv, OpenCLIP) or `"conv"` (CatLIP's
            convolutional stem, see `ConvStem`).
    """

    def __init__(
        self,
        hidden_dim,
        patch_size,
        grid_size,
        use_class_token=True,
        stem="patch",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.patch_size = int(patch_size)
        self.grid_size = tuple(int(g) for g in grid_size)
        self.use_class_token = bool(use_class_token)
        self.stem = stem

    def build(self, input_shape):
        if self.stem == "patch":
            self.projection = keras.layers.Conv2D(
                self.hidden_dim,
                self.patch_size,
                strides=self.patch_size,
                padding="valid",
                use_bias=False,
                kernel_initializer=_torch_conv_initializer(),
                dtype=self.dtype_policy,
                name="conv1",
            )
        elif self.stem == "conv":
            from keras_superclass.models.superclass.conv_stem import ConvStem

            self.projection = ConvStem(
                self.hidden_dim,
                self.patch_size,
                dtype=self.dtype_policy,
                name="conv_stem",
            )
        else:
            raise ValueError(
                f"`stem` must be 'patch' or 'conv', got {self.stem!r}."
            )
        self.projection.build(input_shape)
        scale = self.hidden_dim**-0.5
        init = keras.initializers.RandomNormal(stddev=scale)
        if self.use_class_token:
            self.class_embedding = self.add_weight(
                shape=(self.hidden_dim,),
                initializer=init,
                name="class_embedding",
            )
        num_positions = self.grid_size[0] * self.grid_size[1]
        num_positions += int(self.use_class_token)
        self.positional_embedding = self.add_weight(
            shape=(num_positions, self.hidden_dim),
            initializer=init,
            name="positional_embedding",
        )
        self.built = True

    def _positions_for(self, rows, cols):
        table = ops.cast(self.positional_embedding, self.compute_dtype)
        if (rows, cols) == self.grid_size:
            return table
        offset = int(self.use_class_token)
        grid = ops.reshape(
            table[offset:], (1, *self.grid_size, self.hidden_dim)
        )
        grid = ops.image.resize(
            ops.cast(grid, "float32"),
            (rows, cols),
            interpolation="bilinear",
            antialias=False,
        )
        grid = ops.cast(
            ops.reshape(grid, (rows * cols, self.hidden_dim)),
            self.compute_dtype,
        )
        if offset:
            grid = ops.concatenate([table[:offset], grid], axis=0)
        return grid

    def _patchify(self, images):
        """The patch conv as one matmul (same weights, same result).

        A stride-`P` conv with a `P x P` kernel is a matmul over flattened
        patches; written so, its backward pass avoids the slow strided
        convolution gradients of XLA and oneDNN on CPU.
        """
        p = self.patch_size
        height, width = images.shape[1], images.shape[2]
        if height is None or width is None or height % p or width % p:
            return self.projection(images)
        rows, cols = height // p, width // p
        channels = images.shape[-1]
        x = ops.cast(images, self.compute_dtype)
        x = ops.reshape(x, (-1, rows, p, cols, p, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, rows, cols, p * p * channels))
        kernel = ops.cast(self.projection.kernel, self.compute_dtype)
        kernel = ops.reshape(kernel, (p * p * channels, self.hidden_dim))
        return project(x, kernel)

    def call(self, images):
        if self.stem == "patch":
            x = self._patchify(images)
        else:
            x = self.projection(images)
        rows, cols = x.shape[1], x.shape[2]
        if rows is None or cols is None:
            raise ValueError(
                "PatchEmbedding needs static image sizes; build the backbone "
                "with a concrete `image_shape`."
            )
        batch = ops.shape(x)[0]
        x = ops.reshape(x, (batch, rows * cols, self.hidden_dim))
        if self.use_class_token:
            cls = ops.cast(self.class_embedding, x.dtype)
            cls = ops.broadcast_to(
                ops.reshape(cls, (1, 1, self.hidden_dim)),
                (batch, 1, self.hidden_dim),
            )
            x = ops.concatenate([cls, x], axis=1)
        return x + self._positions_for(rows, cols)[None]

    def compute_output_shape(self, input_shape):
        rows = input_shape[1] // self.patch_size if input_shape[1] else None
        cols = input_shape[2] // self.patch_size if input_shape[2] else None
        length = None
        if rows is not None and cols is not None:
            length = rows * cols + int(self.use_class_token)
        return (input_shape[0], length, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            patch_size=self.patch_size,
            grid_size=list(self.grid_size),
            use_class_token=self.use_class_token,
            stem=self.stem,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_superclass")
class TransformerBlock(keras.layers.Layer):
    """Pre-LN transformer block (OpenCLIP `ResidualAttentionBlock`).

    `x + attn(ln_1(x))`, then `x + c_proj(act(c_fc(ln_2(x))))`; no
    LayerScale.

    Args:
        hidden_dim: token width.
        num_heads: attention heads.
        mlp_dim: hidden width of the MLP.
        layer_norm_epsilon: epsilon of both LayerNorms.
        dropout_rate: dropout after attention and MLP (0 in the reference).
        remat: recompute the block's activations in the backward pass
            (gradient checkpointing), trading compute for memory.
        activation: `"gelu"` (exact) or `"quick_gelu"` (OpenAI CLIP).
        causal: causal self-attention (the text tower).
        flash_attention: see `MultiHeadSelfAttention`.
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        mlp_dim,
        layer_norm_epsilon=1e-5,
        dropout_rate=0.0,
        remat=False,
        activation="gelu",
        causal=False,
        flash_attention=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in MLP_ACTIVATIONS:
            raise ValueError(
                f"`activation` must be one of {MLP_ACTIVATIONS}, got "
                f"{activation!r}."
            )
        self.activation = activation
        self.causal = bool(causal)
        self.remat = bool(remat)
        self.flash_attention = flash_attention
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout_rate = dropout_rate

    def build(self, input_shape):
        policy = self.dtype_policy
        eps = self.layer_norm_epsilon
        self.ln_1 = LayerNormalization(epsilon=eps, dtype=policy, name="ln_1")
        self.ln_1.build(input_shape)
        self.attn = MultiHeadSelfAttention(
            self.hidden_dim,
            self.num_heads,
            causal=self.causal,
            flash_attention=self.flash_attention,
            dtype=policy,
            name="attn",
        )
        self.attn.build(input_shape)
        self.ln_2 = LayerNormalization(epsilon=eps, dtype=policy, name="ln_2")
        self.ln_2.build(input_shape)
        self.c_fc = Dense(
            self.mlp_dim,
            kernel_initializer=torch_linear_kernel_initializer(),
            bias_initializer=torch_linear_bias_initializer(self.hidden_dim),
            dtype=policy,
            name="c_fc",
        )
        self.c_fc.build(input_shape)
        self.c_proj = Dense(
            self.hidden_dim,
            kernel_initializer=torch_linear_kernel_initializer(),
            bias_initializer=torch_linear_bias_initializer(self.mlp_dim),
            dtype=policy,
            name="c_proj",
        )
        self.c_proj.build((*input_shape[:-1], self.mlp_dim))
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=policy)
        self.built = True

    def _forward(self, x, training=None):
        # Each norm runs inside the Dense after it, which keeps only the
        # norm's input for backward; likewise GELU inside `c_proj`.
        h = self.attn(x, norm=self.ln_1)
        x = x + self.dropout(h, training=training)
        h = norm_dense(self.ln_2, self.c_fc, tokens_as_rows(x))
        if self.activation == "gelu":
            h = gelu_dense(self.c_proj, h)
        else:
            h = self.c_proj(quick_gelu(h))
        h = ops.reshape(h, ops.shape(x))
        return x + self.dropout(h, training=training)

    def call(self, x, training=None):
        if self.remat:
            # `training` is closed over: remat wrappers only take tensors.
            return keras.remat(lambda t: self._forward(t, training))(x)
        return self._forward(x, training)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dropout_rate=self.dropout_rate,
            remat=self.remat,
            activation=self.activation,
            causal=self.causal,
            flash_attention=self.flash_attention,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_superclass")
class MultiheadAttentionPooling(keras.layers.Layer):
    """MAP head (big_vision): a learned probe attends over the tokens.

    `probe -> MHA(probe, tokens) -> x + MLP(LN(x))`, returns `(B, D)`.
    """

    def __init__(
        self, hidden_dim, num_heads, mlp_dim, layer_norm_epsilon=1e-5, **kw
    ):
        super().__init__(**kw)
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, input_shape):
        policy = self.dtype_policy
        self.probe = self.add_weight(
            shape=(1, 1, self.hidden_dim),
            initializer="glorot_uniform",
            name="probe",
        )
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads,
            self.hidden_dim // self.num_heads,
            dtype=policy,
            name="attention",
        )
        probe_shape = (input_shape[0], 1, self.hidden_dim)
        self.attention.build(probe_shape, input_shape)
        self.mlp = Dense(self.mlp_dim, dtype=policy, name="fc")
        self.mlp.build(probe_shape)
        self.mlp_out = Dense(self.hidden_dim, dtype=policy, name="proj")
        self.mlp_out.build((*probe_shape[:-1], self.mlp_dim))
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="ln"
        )
        self.norm.build(probe_shape)
        self.built = True

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        probe = ops.broadcast_to(
            ops.cast(self.probe, tokens.dtype), (batch, 1, self.hidden_dim)
        )
        x = self.attention(probe, tokens)
        h = self.mlp_out(ops.gelu(self.mlp(self.norm(x)), approximate=False))
        return (x + h)[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_superclass")
class TokenPooling(keras.layers.Layer):
    """Pools `(B, N, D)` tokens: `"avg"` of patch tokens or `"cls"` token.

    Args:
        pooling: `"avg"` (mean over patch tokens, the class token excluded,
            SuperClass) or `"cls"` (the class token, CatLIP).
        num_prefix_tokens: leading non-patch tokens (1 with a class token).
    """

    def __init__(self, pooling="avg", num_prefix_tokens=1, **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("avg", "cls"):
            raise ValueError(f"Unknown pooling {pooling!r}.")
        if pooling == "cls" and num_prefix_tokens < 1:
            raise ValueError(
                "`pooling='cls'` needs the class token "
                "(`use_class_token=True`)."
            )
        self.pooling = pooling
        self.num_prefix_tokens = int(num_prefix_tokens)

    def call(self, tokens):
        if self.pooling == "cls":
            return tokens[:, 0]
        return ops.mean(tokens[:, self.num_prefix_tokens :], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            pooling=self.pooling, num_prefix_tokens=self.num_prefix_tokens
        )
        return config
