"""The OpenCLIP text tower as a keras-hub `Backbone`."""

import keras
import numpy as np
from keras_hub.models import Backbone

from keras_superclass.models.image_text.image_text_layers import EndTokenPooling
from keras_superclass.models.image_text.image_text_layers import TextEmbedding
from keras_superclass.models.superclass.superclass_layers import (
    TransformerBlock,
)
from keras_superclass.utils.presets import check_model_kwargs


@keras.saving.register_keras_serializable(package="keras_superclass")
class OpenCLIPTextEncoder(Backbone):
    """OpenCLIP's `TextTransformer`: causal pre-LN transformer over BPE ids.

    Token embedding + learned positions, `num_layers` causal transformer
    blocks (fused qkv, the same `TransformerBlock` as the image ViT),
    `ln_final`, then the features of the end-of-text token. The projection
    to the joint space (`text_projection`) belongs to `ImageTextModel`.
    The weights are initialised as OpenCLIP's (`N(0, W^-0.5)` in-projection,
    `N(0, (2W)^-0.5)` fc, `N(0, W^-0.5 (2 layers)^-0.5)` output projections).

    keras-hub's `CLIPTextEncoder` is not used: its LayerNorm epsilon is
    fixed at 1e-6 (OpenCLIP: 1e-5), it splits q/k/v and has no end-token
    pooling, so OpenCLIP checkpoints would not load exactly.

    Args:
        vocabulary_size: token ids (49,408 for CLIP BPE).
        sequence_length: context length `L` (77); inputs are `(B, L)`.
        hidden_dim: width `W` (512).
        num_layers: transformer blocks (12).
        num_heads: attention heads (8).
        mlp_dim: MLP width (4 W).
        pooling: `"argmax"` (the largest id is the end token: CLIP BPE) or
            `"eos"` (the first `end_token_id`).
        end_token_id: end-of-text id for `pooling="eos"`.
        layer_norm_epsilon: 1e-5 (OpenCLIP).
        mlp_activation: `"gelu"` (LAION / OpenCLIP) or `"quick_gelu"`
            (OpenAI CLIP).
        dtype: dtype policy.

    Inputs `{"token_ids": (B, L) int}`; outputs
    `{"pooled_output": (B, W), "sequence_output": (B, L, W)}` after
    `ln_final`.

    Example:
    >>> encoder = OpenCLIPTextEncoder(
    ...     vocabulary_size=100, sequence_length=8, hidden_dim=32,
    ...     num_layers=1, num_heads=2,
    ... )
    >>> ids = np.array([[99, 5, 7, 98, 0, 0, 0, 0]])
    >>> tuple(encoder({"token_ids": ids})["pooled_output"].shape)
    (1, 32)
    """

    def __init__(
        self,
        vocabulary_size=49408,
        sequence_length=77,
        hidden_dim=512,
        num_layers=12,
        num_heads=8,
        mlp_dim=None,
        pooling="argmax",
        end_token_id=None,
        layer_norm_epsilon=1e-5,
        mlp_activation="gelu",
        dtype=None,
        **kwargs,
    ):
        check_model_kwargs(type(self), kwargs)
        mlp_dim = int(mlp_dim or 4 * hidden_dim)

        # === Layers ===
        self.embedding = TextEmbedding(
            vocabulary_size,
            sequence_length,
            hidden_dim,
            dtype=dtype,
            name="embedding",
        )
        self.transformer_blocks = [
            TransformerBlock(
                hidden_dim,
                num_heads,
                mlp_dim,
                layer_norm_epsilon=layer_norm_epsilon,
                activation=mlp_activation,
                causal=True,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        self.ln_final = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="ln_final"
        )
        self.pooler = EndTokenPooling(
            pooling, end_token_id, dtype=dtype, name="pooling"
        )

        # === Functional model ===
        token_ids = keras.Input(
            shape=(sequence_length,), dtype="int32", name="token_ids"
        )
        x = self.embedding(token_ids)
        for block in self.transformer_blocks:
            x = block(x)
        sequence = self.ln_final(x)
        pooled = self.pooler(sequence, token_ids)
        super().__init__(
            inputs={"token_ids": token_ids},
            outputs={"pooled_output": pooled, "sequence_output": sequence},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = int(vocabulary_size)
        self.sequence_length = int(sequence_length)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.mlp_dim = mlp_dim
        self.pooling = pooling
        self.end_token_id = end_token_id
        self.layer_norm_epsilon = layer_norm_epsilon
        self.mlp_activation = mlp_activation
        self._initialize_like_openclip()

    def _initialize_like_openclip(self):
        width, layers = self.hidden_dim, max(1, self.num_layers)
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer_blocks:
            for dense, std in (
                (block.attn.in_proj, width**-0.5),
                (block.attn.out_proj, proj_std),
                (block.c_fc, (2 * width) ** -0.5),
                (block.c_proj, proj_std),
            ):
                # NumPy (seeded by keras.utils.set_random_seed): no
                # per-shape compilation of a backend random op.
                shape = tuple(dense.kernel.shape)
                dense.kernel.assign(np.random.normal(0.0, std, shape))

    @property
    def output_dim(self):
        """Width of `"pooled_output"`."""
        return self.hidden_dim

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            sequence_length=self.sequence_length,
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            pooling=self.pooling,
            end_token_id=self.end_token_id,
            layer_norm_epsilon=self.layer_norm_epsilon,
            mlp_activation=self.mlp_activation,
        )
        return config
