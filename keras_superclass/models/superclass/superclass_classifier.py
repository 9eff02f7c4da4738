"""SuperClass task: image encoder + multi-label token head + IDF loss."""

import keras
import numpy as np
from keras_hub.models import Task

from keras_superclass.layers.idf_statistics import IDFStatistics
from keras_superclass.layers.image_normalization import ImageNormalization
from keras_superclass.layers.token_head import TokenHead
from keras_superclass.losses.superclass_loss import SuperClassLoss
from keras_superclass.metrics.token_metrics import TokenTopKPrecision
from keras_superclass.metrics.token_metrics import TokenTopKRecall
from keras_superclass.models.superclass.superclass_backbone import (
    SuperClassBackbone,
)
from keras_superclass.models.superclass.superclass_presets import (
    backbone_presets,
)
from keras_superclass.utils.presets import build_task_from_preset
from keras_superclass.utils.presets import resolve_preset


def reference_optimizer(
    model,
    learning_rate=5e-4,
    warmup_steps=500,
    total_steps=None,
    weight_decay=0.2,
    beta_1=0.9,
    beta_2=0.98,
    epsilon=1e-6,
    min_learning_rate_ratio=0.0,
    clipnorm=None,
    global_clipnorm=None,
    use_ema=False,
    ema_momentum=0.9999,
    gradient_accumulation_steps=None,
):
    """AdamW with linear warmup + cosine decay, no decay on 1-D weights.

    Steps count optimizer updates. With `total_steps=None` the rate warms up
    and then stays constant. With `gradient_accumulation_steps=k` each
    update averages the gradients of k batches (a large global batch on
    small hardware).
    """
    # Keras evaluates the schedule on micro-batch iterations.
    micro = gradient_accumulation_steps or 1
    if total_steps:
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup_steps else learning_rate,
            decay_steps=max(1, (total_steps - warmup_steps) * micro),
            alpha=min_learning_rate_ratio,
            warmup_target=learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps * micro,
        )
    else:
        schedule = learning_rate
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        clipnorm=clipnorm,
        global_clipnorm=global_clipnorm,
        use_ema=use_ema,
        ema_momentum=ema_momentum,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )
    # The reference decays only tensors with ndim >= 2 (no biases, norms).
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if len(v.shape) < 2]
    )
    return optimizer


@keras.saving.register_keras_serializable(package="keras_superclass")
class SuperClassClassifier(Task):
    """Predicts the bag of caption tokens from an image (SuperClass).

    `backbone(images)["pooled_output"] -> TokenHead -> logits (B, V)`,
    trained with `SuperClassLoss`. The task owns the online-IDF statistics
    (`idf_statistics`), so checkpoints and presets carry them.

    Args:
        backbone: any image encoder `Backbone` whose output dict holds
            `"pooled_output"` (`SuperClassBackbone`, `CRUNetBackbone`).
        vocabulary_size: classes of the head (49,408 for CLIP BPE).
        head_mlp_layers: residual MLP blocks before the classifier.
        ignore_ids: token ids that never become targets (special tokens);
            the data pipeline already drops them, this guards raw labels.
        preprocessor: optional preprocessing layer.
        normalize_images: take raw pixels in [0, 255] (uint8 from
            `image_text_dataset(..., normalize=False)`) and apply the OpenAI
            mean/std on the device; `False` (default): inputs are already
            normalised.
        compile: compile with the reference recipe on construction.

    Example:
    >>> model = SuperClassClassifier.from_preset(
    ...     "superclass_vit_ti16", vocabulary_size=1000
    ... )
    >>> model.compile(total_steps=1000)
    >>> # model.fit(dataset_of_images_and_token_ids, epochs=1)
    """

    backbone_cls = SuperClassBackbone
    architecture_presets = backbone_presets

    def __init__(
        self,
        backbone,
        vocabulary_size=49408,
        head_mlp_layers=0,
        ignore_ids=None,
        preprocessor=None,
        normalize_images=False,
        compile=True,
        **kwargs,
    ):
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.image_normalization = (
            ImageNormalization(name="image_normalization")
            if normalize_images
            else None
        )
        head_epsilon = getattr(backbone, "layer_norm_epsilon", 1e-5)
        self.token_head = TokenHead(
            vocabulary_size,
            num_mlp_layers=head_mlp_layers,
            layer_norm_epsilon=head_epsilon,
            dtype=backbone.dtype_policy,
            name="token_head",
        )

        # === Functional model ===
        images = keras.Input(shape=backbone.input_shape[1:], name="images")
        x = images
        if self.image_normalization is not None:
            x = self.image_normalization(x)
        features = backbone(x)["pooled_output"]
        logits = self.token_head(features)
        super().__init__(inputs=images, outputs=logits, compile=False, **kwargs)

        # === State outside the forward pass ===
        # Tracked after the functional init so every backend sees it.
        self.idf_statistics = IDFStatistics(
            vocabulary_size, name="idf_statistics"
        )

        # === Config ===
        self.vocabulary_size = int(vocabulary_size)
        self.head_mlp_layers = head_mlp_layers
        self.normalize_images = bool(normalize_images)
        self.ignore_ids = sorted(int(i) for i in (ignore_ids or []))
        if compile:
            self.compile()

    # The reference recipe; `compile(**overrides)` changes any entry.
    recipe = dict(
        learning_rate=5e-4,
        warmup_steps=500,
        total_steps=None,
        weight_decay=0.2,
        beta_1=0.9,
        beta_2=0.98,
        epsilon=1e-6,
        min_learning_rate_ratio=0.0,
        clipnorm=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.9999,
        gradient_accumulation_steps=None,
    )

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        idf="online",
        loss_kwargs=None,
        **kwargs,
    ):
        """Compiles with the reference recipe unless told otherwise.

        `"auto"` optimizer: AdamW built by `reference_optimizer` from
        `self.recipe` updated with any recipe keyword given here (e.g.
        `learning_rate`, `warmup_steps`, `total_steps`,
        `gradient_accumulation_steps`): betas 0.9/0.98, eps 1e-6, weight
        decay 0.2 on weights with ndim >= 2, linear warmup then cosine
        decay to 0. `"auto"` loss: `default_loss(idf)`, bound to this
        model's IDF statistics. A loss name (`"softmax"`, `"bce"`, `"asl"`,
        `"softmargin"`, `"twoway"`) builds that ablation loss for this head
        with `loss_kwargs`. `"auto"` metrics: token top-5 precision and
        recall. Other keywords go to `keras.Model.compile`.
        """
        recipe = {k: kwargs.pop(k) for k in list(kwargs) if k in self.recipe}
        if optimizer == "auto":
            optimizer = reference_optimizer(self, **{**self.recipe, **recipe})
        elif recipe:
            raise ValueError(
                f"Recipe arguments {sorted(recipe)} only apply to the "
                f"'auto' optimizer; configure your optimizer directly."
            )
        if loss == "auto":
            loss = self.default_loss(idf)
        elif isinstance(loss, str):
            from keras_superclass.losses.multilabel_losses import (
                get_multilabel_loss,
            )

            loss = get_multilabel_loss(
                loss,
                self.vocabulary_size,
                ignore_ids=self.ignore_ids,
                **(loss_kwargs or {}),
            )
        self._check_loss(loss)
        if metrics == "auto":
            k = min(5, self.vocabulary_size)
            metrics = [
                TokenTopKPrecision(k, vocabulary_size=self.vocabulary_size),
                TokenTopKRecall(k, vocabulary_size=self.vocabulary_size),
            ]
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )

    def default_loss(self, idf="online"):
        """The loss `compile(loss="auto")` uses: `SuperClassLoss`."""
        return SuperClassLoss(
            self.vocabulary_size, idf=idf, ignore_ids=self.ignore_ids
        )

    def _check_loss(self, loss):
        size = getattr(loss, "vocabulary_size", None)
        if size is not None and size != self.vocabulary_size:
            raise ValueError(
                f"The loss covers a vocabulary of {size} classes but the "
                f"model's head has {self.vocabulary_size}. Build both with "
                f"the tokenizer's vocabulary size."
            )
        if getattr(loss, "idf", None) == "online":
            loss.bind_statistics(self.idf_statistics)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        # The online IDF statistics move only on training steps.
        with self.idf_statistics.updates(training):
            return super().compute_loss(
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                training=training,
            )

    def prepare_images(self, pixels):
        """Raw pixels in [0, 255] `(B, H, W, 3)` as this task takes them:
        unchanged with `normalize_images`, else normalised here."""
        pixels = np.asarray(pixels)
        if self.normalize_images:
            return pixels
        return keras.ops.convert_to_numpy(ImageNormalization()(pixels))

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            head_mlp_layers=self.head_mlp_layers,
            ignore_ids=self.ignore_ids,
            normalize_images=self.normalize_images,
        )
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds an architecture preset or loads a preset directory.

        Args:
            preset: a name from `architecture_presets` (random init) or a
                directory written by `save_to_preset`.
            load_weights: load weights from a preset directory.
            **kwargs: task arguments (`vocabulary_size`, ...) and backbone
                config overrides (`image_shape`, `dtype`, ...).

        Example:
        >>> model = SuperClassClassifier.from_preset("superclass_vit_b16")
        """
        config = resolve_preset(preset, cls.architecture_presets, cls)
        if config is None:
            # keras-hub would look for a subclass per backbone class; our
            # tasks take any encoder (ViT, CRU-Net), so load task.json as is.
            from keras_hub.src.utils.preset_utils import get_preset_loader

            loader = get_preset_loader(preset)
            return loader.load_task(cls, load_weights, True, **kwargs)
        return build_task_from_preset(
            cls,
            config,
            kwargs,
            ("vocabulary_size", "head_mlp_layers", "ignore_ids"),
        )
