"""Image-text contrastive model (CLIP / LiT / SigLIP) over any encoder."""

import warnings

import keras
import numpy as np
from keras import ops

from keras_superclass.data.image_normalization import ImageNormalization
from keras_superclass.models.image_text.image_text_layers import (
    CLIP_LOGIT_SCALE_INIT,
)
from keras_superclass.models.image_text.image_text_layers import (
    CLIP_MAX_LOGIT_SCALE,
)
from keras_superclass.models.image_text.image_text_layers import LogitScale
from keras_superclass.models.image_text.image_text_layers import l2_normalize
from keras_superclass.models.image_text.image_text_presets import (
    image_text_presets,
)
from keras_superclass.models.image_text.text_encoder import OpenCLIPTextEncoder
from keras_superclass.models.multilabel_classifier import MultiLabelClassifier
from keras_superclass.models.multilabel_classifier import PresetTask
from keras_superclass.models.superclass.superclass_backbone import (
    SuperClassBackbone,
)
from keras_superclass.utils.presets import check_model_kwargs


def _text_encoder_from(value, dtype):
    if value is None:
        return OpenCLIPTextEncoder(dtype=dtype)
    if isinstance(value, dict):
        if "class_name" in value:  # A serialized encoder (from_config).
            return keras.layers.deserialize(value)
        return OpenCLIPTextEncoder(**{"dtype": dtype, **value})
    if not isinstance(value, keras.layers.Layer):
        raise TypeError(
            f"text_encoder must be an OpenCLIPTextEncoder, a dict of its "
            f"arguments or None; got {type(value).__name__} {value!r}."
        )
    return value


def _as_numpy(x):
    try:  # NumPy, tf.data / tokenizer output, CPU tensors.
        return np.asarray(x)
    except (TypeError, RuntimeError, ValueError):  # e.g. torch CUDA tensors
        return ops.convert_to_numpy(x)


@keras.saving.register_keras_serializable(package="keras_superclass")
class ImageTextModel(PresetTask):
    """Image encoder + text encoder in a joint space, trained contrastively.

    `images -> backbone -> "pooled_output" -> image_projection -> L2` and
    `token_ids -> text_encoder -> "pooled_output" -> text_projection -> L2`
    (bias-free projections initialised `N(0, width^-0.5)`, as OpenCLIP's
    `proj` and `text_projection`), plus a learnable `logit_scale`
    initialised at `log(1/0.07)` and clamped to `[0, log(100)]` after every
    optimizer step, and for SigLIP a `logit_bias`.

    `call({"images": (B, H, W, 3), "token_ids": (B, L)})` returns what the
    contrastive losses take (`keras_superclass.losses.CLIPLoss`,
    `SigLIPLoss`): `{"image_features": (B, D), "text_features": (B, D)}`
    (L2-normalised, float32) and `"logit_scale"` (`exp` of the log scale)
    and, with a bias, `"logit_bias"`, each repeated to `(B,)`.
    `compile()` uses the contrastive loss; `fit` takes batches of
    `{"images", "token_ids"}` (no labels: pair i is the positive of row i).

    Args:
        backbone: any image encoder of this project (`SuperClassBackbone`,
            CatLIP's ViT, `CRUNetBackbone`): a `Backbone` whose output dict
            holds `"pooled_output"`.
        text_encoder: an `OpenCLIPTextEncoder`, or a dict of its
            arguments; `None` builds OpenCLIP's default (width 512, 8
            heads, 12 layers, context 77, 49,408 ids).
        embed_dim: width `D` of the joint space (512).
        logit_scale_init: initial log scale (`log(10)` for SigLIP).
        logit_bias_init: initial logit bias (`-10` for SigLIP) or `None`
            (CLIP: no bias).
        max_logit_scale: clamp of `exp(logit_scale)`.
        normalize_images: take raw pixels in [0, 255] and normalise on the
            device (as `SuperClassClassifier`).
        preprocessor: a preprocessor giving `{"images", "token_ids"}`.
        compile: compile with the CLIP recipe on construction.

    Example (the sizes of the `SuperClassBackbone` and
    `OpenCLIPTextEncoder` examples):
    >>> backbone = SuperClassBackbone.from_preset(
    ...     "superclass_vit_ti16", image_shape=(32, 32, 3), num_layers=1
    ... )
    >>> model = ImageTextModel(
    ...     backbone,
    ...     text_encoder={"vocabulary_size": 100, "sequence_length": 8,
    ...                   "hidden_dim": 32, "num_layers": 1, "num_heads": 2},
    ...     embed_dim=16,
    ... )
    >>> images = np.zeros((2, 32, 32, 3), "float32")
    >>> ids = np.array([[98, 5, 99, 0, 0, 0, 0, 0]] * 3)
    >>> tuple(model.encode_images(images).shape)
    (2, 16)
    >>> tuple(model.encode_texts(ids).shape)
    (3, 16)
    """

    backbone_cls = SuperClassBackbone
    architecture_presets = image_text_presets
    task_arguments = (
        "text_encoder",
        "embed_dim",
        "logit_scale_init",
        "logit_bias_init",
        "max_logit_scale",
        "normalize_images",
    )
    head_arguments = ("text_encoder", "embed_dim")
    recipe = dict(MultiLabelClassifier.recipe)

    def __init__(
        self,
        backbone,
        text_encoder=None,
        embed_dim=512,
        logit_scale_init=CLIP_LOGIT_SCALE_INIT,
        logit_bias_init=None,
        max_logit_scale=CLIP_MAX_LOGIT_SCALE,
        normalize_images=False,
        preprocessor=None,
        compile=True,
        **kwargs,
    ):
        check_model_kwargs(type(self), kwargs)
        try:
            backbone_outputs = backbone.output
        except (AttributeError, ValueError):  # Not a functional model.
            backbone_outputs = {}
        if not isinstance(backbone_outputs, dict) or (
            "pooled_output" not in backbone_outputs
        ):
            raise ValueError(
                f"The image encoder {type(backbone).__name__} has no "
                f"'pooled_output' output; use a backbone of this project "
                f"(SuperClassBackbone, CRUNetBackbone)."
            )
        policy = backbone.dtype_policy
        # === Layers ===
        self.backbone = backbone
        self.text_encoder = _text_encoder_from(text_encoder, policy)
        self.preprocessor = preprocessor
        self.image_normalization = (
            ImageNormalization(name="image_normalization")
            if normalize_images
            else None
        )
        image_width = backbone_outputs["pooled_output"].shape[-1]
        text_width = self.text_encoder.hidden_dim
        self.image_projection = keras.layers.Dense(
            embed_dim,
            use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(
                stddev=image_width**-0.5
            ),
            dtype=policy,
            name="image_projection",
        )
        self.text_projection = keras.layers.Dense(
            embed_dim,
            use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(
                stddev=text_width**-0.5
            ),
            dtype=policy,
            name="text_projection",
        )
        self.logit_scale_layer = LogitScale(
            logit_scale_init,
            logit_bias_init,
            max_logit_scale,
            name="logit_scale",
        )

        # === Functional model ===
        images = keras.Input(shape=backbone.input_shape[1:], name="images")
        sequence_length = self.text_encoder.sequence_length
        token_ids = keras.Input(
            shape=(sequence_length,), dtype="int32", name="token_ids"
        )
        outputs = {
            "image_features": self._image_features(images, True, None),
            "text_features": self._text_features(token_ids, True, None),
        }
        scale = self.logit_scale_layer(outputs["image_features"])
        if logit_bias_init is None:
            outputs["logit_scale"] = scale
        else:
            outputs["logit_scale"], outputs["logit_bias"] = scale
        super().__init__(
            inputs={"images": images, "token_ids": token_ids},
            outputs=outputs,
            compile=False,
            **kwargs,
        )

        # === Config ===
        self.embed_dim = int(embed_dim)
        self.logit_scale_init = float(logit_scale_init)
        self.logit_bias_init = (
            None if logit_bias_init is None else float(logit_bias_init)
        )
        self.max_logit_scale = float(max_logit_scale)
        self.normalize_images = bool(normalize_images)
        self.contrastive_loss = None
        if compile:
            self.compile()

    # === Towers ===

    def _image_features(self, images, normalize, training):
        x = images
        if self.image_normalization is not None:
            x = self.image_normalization(x)
        pooled = self.backbone(x, training=training)["pooled_output"]
        features = self.image_projection(pooled)
        return l2_normalize(features) if normalize else features

    def _text_features(self, token_ids, normalize, training):
        inputs = {"token_ids": token_ids}
        pooled = self.text_encoder(inputs, training=training)["pooled_output"]
        features = self.text_projection(pooled)
        return l2_normalize(features) if normalize else features

    def _encoder(self, kind):
        """A compiled-on-predict model of one tower (built once).

        Kept out of Keras' attribute tracking (`__dict__`), so presets
        and checkpoints do not see the shared layers twice.
        """
        cache = self.__dict__.setdefault("_tower_models", {})
        if kind not in cache:
            if kind == "images":
                inputs = keras.Input(shape=self.backbone.input_shape[1:])
                outputs = self._image_features(inputs, False, None)
            else:
                length = self.text_encoder.sequence_length
                inputs = keras.Input(shape=(length,), dtype="int32")
                outputs = self._text_features(inputs, False, None)
            cache[kind] = keras.Model(inputs, outputs, name=f"{kind}_tower")
        return cache[kind]

    def _encode(self, kind, inputs, normalize, batch_size):
        features = self._encoder(kind).predict(
            inputs, batch_size=batch_size, verbose=0
        )
        features = np.asarray(features, dtype="float32")
        if normalize:
            norms = np.linalg.norm(features, axis=-1, keepdims=True)
            features = features / np.maximum(norms, 1e-12)
        return features

    def encode_images(self, images, normalize=True, batch_size=256):
        """Image embeddings `(N, D)` as NumPy (inference mode, compiled).

        Args:
            images: `(N, H, W, 3)` images as the model takes them (raw
                pixels with `normalize_images=True`, else normalised).
            normalize: L2-normalise the embeddings.
            batch_size: images per forward pass.
        """
        return self._encode("images", images, normalize, batch_size)

    def encode_texts(self, token_ids, normalize=True, batch_size=256):
        """Text embeddings `(M, D)` as NumPy of `(M, L)` token ids.

        Args:
            token_ids: ids padded to the text encoder's `sequence_length`
                (e.g. `CLIPTokenizer(sequence_length=77)` output).
            normalize: L2-normalise the embeddings.
            batch_size: sequences per forward pass.
        """
        token_ids = _as_numpy(token_ids)
        length = self.text_encoder.sequence_length
        if token_ids.ndim != 2 or token_ids.shape[-1] != length:
            raise ValueError(
                f"`token_ids` must be (M, {length}) ids padded to the text "
                f"encoder's sequence_length; got shape "
                f"{tuple(token_ids.shape)}. Tokenize with "
                f"sequence_length={length}."
            )
        return self._encode("texts", token_ids, normalize, batch_size)

    def logits(self, images, token_ids):
        """`(N, M)` image-to-text logits `scale * <img, txt> (+ bias)`."""
        image_features = self.encode_images(images)
        text_features = self.encode_texts(token_ids)
        layer = self.logit_scale_layer
        scale = np.exp(ops.convert_to_numpy(layer.logit_scale))
        logits = scale * image_features @ text_features.T
        if layer.logit_bias is not None:
            logits = logits + ops.convert_to_numpy(layer.logit_bias)
        return logits

    # === LiT ===

    def _image_tower_groups(self):
        """OpenCLIP's lock groups: stem, blocks, last block + norm, proj."""
        backbone = self.backbone
        blocks = getattr(backbone, "transformer_blocks", None)
        if not blocks:  # Any other encoder: one group.
            return [[backbone], [self.image_projection]]
        stem = [backbone.patch_embedding, backbone.ln_pre]
        tail = [blocks[-1], backbone.ln_post, backbone.pooler]
        return [
            stem,
            *[[block] for block in blocks[:-1]],
            tail,
            [self.image_projection],
        ]

    def lock_image_tower(self, unlocked_groups=1):
        """Freezes the image tower but its last `unlocked_groups` groups.

        LiT (Zhai et al. 2022) and OpenCLIP's `lock_image`: groups are, in
        order, the stem (patch embedding, `ln_pre`), each transformer
        block, the last block with `ln_post` (and pooling), and the image
        projection. `unlocked_groups=1` (the reference LiT configs'
        `lock_image_unlocked_groups: 1`) trains only the projection; `0`
        freezes it too. Encoders other than the ViT form one group.
        Frozen BatchNorm layers run in inference mode. Call before
        `compile()` / `fit()`.

        Args:
            unlocked_groups: trailing groups left trainable.
        """
        groups = self._image_tower_groups()
        if not 0 <= unlocked_groups <= len(groups):
            raise ValueError(
                f"`unlocked_groups` must be in [0, {len(groups)}] for this "
                f"image tower ({len(groups)} groups), got {unlocked_groups}."
            )
        self.backbone.trainable = True
        for group in groups:
            for layer in group:
                layer.trainable = False
        for group in groups[len(groups) - unlocked_groups :]:
            for layer in group:
                layer.trainable = True
        if unlocked_groups <= 1:
            self.backbone.trainable = False
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and optimizer.built:
            warnings.warn(
                "lock_image_tower() after training started: the optimizer "
                "already tracks the image tower. Call compile() again.",
                stacklevel=2,
            )

    # === Training ===

    def compile(
        self, optimizer="auto", loss="auto", loss_kwargs=None, **kwargs
    ):
        """Compiles with the CLIP recipe and a contrastive loss.

        `"auto"` optimizer: AdamW from `reference_optimizer` with
        `self.recipe` (the classification recipe: 5e-4, betas 0.9 / 0.98,
        eps 1e-6, weight decay 0.2 on matrices only) updated by any recipe
        keyword given here (`learning_rate`, `total_steps`, ...). `"auto"`
        loss: `"siglip"` with a logit bias, else `"clip"`; a name builds it
        with `loss_kwargs`; or a loss object taking `(None, outputs)`.
        """
        from keras_superclass.losses.contrastive_losses import (
            get_contrastive_loss,
        )

        optimizer = self.recipe_optimizer(optimizer, kwargs)
        if loss == "auto":
            loss = "clip" if self.logit_bias_init is None else "siglip"
        if isinstance(loss, str):
            loss = get_contrastive_loss(loss, **(loss_kwargs or {}))
        if getattr(loss, "needs_bias", False) and self.logit_bias_init is None:
            raise ValueError(
                "The SigLIP loss needs a logit bias: build the model with "
                "logit_bias_init=-10.0 and logit_scale_init=log(10)."
            )
        self.contrastive_loss = loss
        kwargs.setdefault("metrics", None)
        super().compile(optimizer=optimizer, loss=None, **kwargs)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if self.contrastive_loss is None:
            return super().compute_loss(
                x, y, y_pred, sample_weight, training=training
            )
        loss = self.contrastive_loss(None, y_pred)
        for extra in self.losses:  # Regularisers, `add_loss`.
            loss = loss + ops.cast(ops.sum(extra), loss.dtype)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            text_encoder=keras.layers.serialize(self.text_encoder),
            embed_dim=self.embed_dim,
            logit_scale_init=self.logit_scale_init,
            logit_bias_init=self.logit_bias_init,
            max_logit_scale=self.max_logit_scale,
            normalize_images=self.normalize_images,
        )
        return config
