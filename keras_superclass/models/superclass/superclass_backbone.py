"""The ViT image encoder of SuperClass (OpenCLIP `VisionTransformer`)."""

import keras
from keras_hub.models import Backbone

from keras_superclass.models.superclass.superclass_layers import (
    MultiheadAttentionPooling,
)
from keras_superclass.models.superclass.superclass_layers import PatchEmbedding
from keras_superclass.models.superclass.superclass_layers import TokenPooling
from keras_superclass.models.superclass.superclass_layers import (
    TransformerBlock,
)
from keras_superclass.models.superclass.superclass_presets import (
    backbone_presets,
)
from keras_superclass.utils.presets import check_model_kwargs
from keras_superclass.utils.presets import resolve_preset

POOLINGS = ("avg", "cls", "map")


class PatchGridError(ValueError):
    """Images whose sides the patch size does not divide."""


def check_image_shape(image_shape, patch_size):
    """Validates `(H, W, C)` against the patch size; returns it as a tuple."""
    image_shape = tuple(image_shape)
    if len(image_shape) != 3:
        raise ValueError(
            f"`image_shape` must be (height, width, channels), got "
            f"{image_shape}."
        )
    height, width, _ = image_shape
    for name, size in (("height", height), ("width", width)):
        if size is None:
            raise ValueError(
                f"Image {name} must be fixed; the position table is resized "
                f"for each size, so build one backbone per image size."
            )
        if size % patch_size:
            fit = max(patch_size, size // patch_size * patch_size)
            raise PatchGridError(
                f"Image {name} {size} is not divisible by the patch size "
                f"{patch_size}. Resize or crop images to a multiple of "
                f"{patch_size} (e.g. {fit})."
            )
    return image_shape


@keras.saving.register_keras_serializable(package="keras_superclass")
class SuperClassBackbone(Backbone):
    """ViT image encoder with OpenCLIP's structure and initialisation.

    Bias-free conv patchify, class token and learned positions
    (`width**-0.5 * normal`), `ln_pre`, pre-LN transformer blocks (fused
    qkv with biases, exact-GELU MLP), `ln_post` on all tokens, then pooling.
    Takes float images `(B, H, W, 3)` normalised with the OpenAI mean/std
    and returns a dict with `"pooled_output"` `(B, D)` and
    `"sequence_output"` `(B, N, D)` (after `ln_post`).

    Args:
        image_shape: `(H, W, 3)` of the inputs; H and W divisible by
            `patch_size`.
        patch_size: side of the square patches.
        num_layers: transformer blocks.
        num_heads: attention heads per block.
        hidden_dim: token width `D`.
        mlp_dim: hidden width of the MLPs (4 D in the reference).
        pooling: `"avg"` (mean of patch tokens, SuperClass), `"cls"` (class
            token, CatLIP) or `"map"` (attention-pool head).
        use_class_token: prepend a class token.
        position_grid_size: `(rows, cols)` the position table is learned
            for; defaults to the image grid. A different image size resizes
            the table bilinearly.
        layer_norm_epsilon: 1e-5 (OpenCLIP) or 1e-6 (CatLIP).
        dropout_rate: dropout in the blocks (0 in the reference).
        stem: `"patch"` (one conv) or `"conv"` (CatLIP's conv stem).
        remat: recompute each block's activations in the backward pass,
            trading compute for memory.
        mlp_activation: `"gelu"` (exact, OpenCLIP / LAION) or
            `"quick_gelu"` (OpenAI CLIP checkpoints).
        flash_attention: `None` (default): Keras uses the fused attention
            kernel where the backend and device have one (cuDNN flash
            attention for bf16 on GPU, TPU, PyTorch SDPA); `True` requires
            it, `False` forbids it.
        dtype: dtype policy, e.g. `"mixed_bfloat16"`.

    Example:
    >>> backbone = SuperClassBackbone.from_preset(
    ...     "superclass_vit_ti16", image_shape=(32, 32, 3), num_layers=1
    ... )
    >>> images = keras.ops.zeros((1, 32, 32, 3))
    >>> tuple(backbone(images)["pooled_output"].shape)
    (1, 192)
    """

    architecture_presets = backbone_presets

    def __init__(
        self,
        image_shape=(224, 224, 3),
        patch_size=16,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        mlp_dim=3072,
        pooling="avg",
        use_class_token=True,
        position_grid_size=None,
        layer_norm_epsilon=1e-5,
        dropout_rate=0.0,
        stem="patch",
        remat=False,
        mlp_activation="gelu",
        flash_attention=None,
        dtype=None,
        **kwargs,
    ):
        check_model_kwargs(type(self), kwargs)
        image_shape = check_image_shape(image_shape, patch_size)
        if pooling not in POOLINGS:
            raise ValueError(
                f"`pooling` must be one of {POOLINGS}, got {pooling!r}."
            )
        grid = (image_shape[0] // patch_size, image_shape[1] // patch_size)
        position_grid_size = tuple(position_grid_size or grid)

        # === Layers ===
        self.patch_embedding = PatchEmbedding(
            hidden_dim,
            patch_size,
            grid_size=position_grid_size,
            use_class_token=use_class_token,
            stem=stem,
            dtype=dtype,
            name="patch_embedding",
        )
        self.ln_pre = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="ln_pre"
        )
        self.transformer_blocks = [
            TransformerBlock(
                hidden_dim,
                num_heads,
                mlp_dim,
                layer_norm_epsilon=layer_norm_epsilon,
                dropout_rate=dropout_rate,
                remat=remat,
                activation=mlp_activation,
                flash_attention=flash_attention,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        self.ln_post = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="ln_post"
        )
        if pooling == "map":
            self.pooler = MultiheadAttentionPooling(
                hidden_dim,
                num_heads,
                mlp_dim,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name="map_pooling",
            )
        else:
            self.pooler = TokenPooling(
                pooling,
                num_prefix_tokens=int(use_class_token),
                dtype=dtype,
                name="pooling",
            )

        # === Functional model ===
        images = keras.Input(shape=image_shape, name="images")
        x = self.patch_embedding(images)
        x = self.ln_pre(x)
        for block in self.transformer_blocks:
            x = block(x)
        sequence = self.ln_post(x)
        pooled = self.pooler(sequence)
        super().__init__(
            inputs=images,
            outputs={"pooled_output": pooled, "sequence_output": sequence},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.image_shape = image_shape
        self.patch_size = patch_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.mlp_dim = mlp_dim
        self.pooling = pooling
        self.use_class_token = use_class_token
        self.position_grid_size = position_grid_size
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout_rate = dropout_rate
        self.stem = stem
        self.remat = remat
        self.mlp_activation = mlp_activation
        self.flash_attention = flash_attention

    @property
    def output_dim(self):
        """Width of `"pooled_output"`."""
        return self.hidden_dim

    def get_config(self):
        config = super().get_config()
        config.update(
            image_shape=list(self.image_shape),
            patch_size=self.patch_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            mlp_dim=self.mlp_dim,
            pooling=self.pooling,
            use_class_token=self.use_class_token,
            position_grid_size=list(self.position_grid_size),
            layer_norm_epsilon=self.layer_norm_epsilon,
            dropout_rate=self.dropout_rate,
            stem=self.stem,
            remat=self.remat,
            mlp_activation=self.mlp_activation,
            flash_attention=self.flash_attention,
        )
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds an architecture preset or loads a preset directory.

        Args:
            preset: a name from `SuperClassBackbone.architecture_presets`
                (random initialisation: no official weights exist) or a
                directory written by `save_to_preset`.
            load_weights: load weights from a preset directory.
            **kwargs: config overrides, e.g. `image_shape` or `dtype`.
        """
        config = resolve_preset(preset, cls.architecture_presets, cls)
        if config is None:
            return super().from_preset(preset, load_weights, **kwargs)
        return cls(**{**config["backbone"], **kwargs})
