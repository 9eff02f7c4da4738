"""The base of the multi-label tasks: image encoder -> head over classes."""

import inspect
import warnings

import keras
import numpy as np
from keras_hub.models import Task

from keras_superclass.data.image_normalization import ImageNormalization
from keras_superclass.layers.token_head import TokenHead
from keras_superclass.metrics.token_metrics import TokenTopKPrecision
from keras_superclass.metrics.token_metrics import TokenTopKRecall
from keras_superclass.models.finetune.layer_decay import LayerDecayAdamW
from keras_superclass.models.finetune.layer_decay import layer_decay_multipliers
from keras_superclass.optimizers import AdamW
from keras_superclass.utils.optional import import_tf_dependent
from keras_superclass.utils.presets import build_task_from_preset
from keras_superclass.utils.presets import check_model_kwargs
from keras_superclass.utils.presets import load_task_preset
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
    layer_decay=None,
):
    """AdamW with linear warmup + cosine decay, no decay on 1-D weights.

    Steps count optimizer updates. With `total_steps=None` the rate warms up
    and then stays constant. With `gradient_accumulation_steps=k` each
    update averages the gradients of k batches (a large global batch on
    small hardware). With `layer_decay=d` each variable of the encoder
    (`model.backbone`) learns at `d ** (L + 1 - layer)` times the rate
    (`LayerDecayAdamW`, the BEiT / MAE fine-tuning recipe).
    """
    steps = {"total_steps": total_steps, "warmup_steps": warmup_steps}
    for name, value in steps.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer)
        ):
            raise TypeError(
                f"{name} must be a whole number of steps, got {value!r}."
            )
    if total_steps and warmup_steps >= total_steps:
        warnings.warn(
            f"warmup_steps={warmup_steps} is not below total_steps="
            f"{total_steps}: the learning rate rises for the whole run and "
            f"never reaches learning_rate={learning_rate}. Pass a shorter "
            f"warmup_steps= ('training.warmup_steps' in a config).",
            stacklevel=3,
        )
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
    optimizer_cls = AdamW
    if layer_decay is not None:
        optimizer_cls = LayerDecayAdamW
    optimizer = optimizer_cls(
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
    if layer_decay is not None:
        optimizer.set_learning_rate_multipliers(
            layer_decay_multipliers(model, model.backbone, layer_decay)
        )
    return optimizer


def backbone_image_size(backbone, default=224):
    """The side length a backbone takes (`default` if it takes any)."""
    return backbone.input_shape[1] or default


class PresetTask(Task):
    """What every task of this package shares: presets and their weights.

    - `from_preset(name)` builds an architecture preset (random init) with
      a default preprocessor; `from_preset(dir)` loads a directory written
      by `save_to_preset` (or `keras-superclass export`) with keras-hub's
      public pieces, in Keras safe mode. Unknown arguments raise.
    - Presets hold weights, configs and the preprocessor, never the
      optimizer state (that lives in training checkpoints).
    """

    # `from_preset` keywords: task constructor arguments, those that change
    # the head's shape (a preset's task weights are then not loaded), and
    # options of the default preprocessor.
    task_arguments = ()
    head_arguments = ()
    preprocessor_arguments = ()
    architecture_presets = {}

    @classmethod
    def default_preprocessor(cls, backbone, task_kwargs, options):
        """The preprocessor of an architecture preset (`options` are the
        preprocessor keywords `from_preset` was given)."""
        return None

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds an architecture preset or loads a preset directory.

        Args:
            preset: a name from `architecture_presets` (random init) or a
                directory written by `save_to_preset`.
            load_weights: load weights from a preset directory.
            **kwargs: task arguments (see the class) and backbone config
                overrides (`image_shape`, `dtype`, ...).
        """
        config = resolve_preset(preset, cls.architecture_presets, cls)
        if config is None:
            return load_task_preset(cls, preset, load_weights, kwargs)
        return build_task_from_preset(cls, config, kwargs)

    @classmethod
    def image_converter_for(cls, backbone, normalize_images, options):
        """The image converter matching a backbone and a task."""
        converter_cls = import_tf_dependent(
            "keras_superclass.data.image_converter", "SuperClassImageConverter"
        )
        return converter_cls(
            image_size=backbone_image_size(backbone),
            resize_method=options.get("resize_method", "pil"),
            normalize=not normalize_images,
        )

    # The task's optimizer recipe (`reference_optimizer` keywords); the
    # tasks that compile with an `"auto"` optimizer set it.
    recipe = {}

    def recipe_optimizer(self, optimizer, compile_kwargs):
        """`compile`'s optimizer: `"auto"` builds `reference_optimizer`
        from `recipe`, updated by the recipe keywords popped from
        `compile_kwargs`; recipe keywords beside any other optimizer
        raise."""
        overrides = {
            key: compile_kwargs.pop(key)
            for key in list(compile_kwargs)
            if key in self.recipe
        }
        if optimizer == "auto":
            return reference_optimizer(self, **{**self.recipe, **overrides})
        if overrides:
            raise ValueError(
                f"Recipe arguments {sorted(overrides)} only apply to the "
                f"'auto' optimizer; configure your optimizer directly."
            )
        return optimizer

    def _objects_outside_presets(self):
        skipped = list(self.backbone._flatten_layers())
        if getattr(self, "optimizer", None) is not None:
            skipped.append(self.optimizer)
        return skipped

    def save_task_weights(self, filepath):
        """Saves the weights outside the backbone, without optimizer state."""
        keras.saving.save_weights(
            self, filepath, objects_to_skip=self._objects_outside_presets()
        )

    def load_task_weights(self, filepath):
        """Loads what `save_task_weights` wrote (the optimizer is left)."""
        keras.saving.load_weights(
            self, filepath, objects_to_skip=self._objects_outside_presets()
        )


class MultiLabelClassifier(PresetTask):
    """Image encoder -> `TokenHead` -> logits `(B, V)` over a label set.

    The shared base of `SuperClassClassifier` (caption tokens, softmax) and
    `CatLIPClassifier` (synsets, BCE). Subclasses set `recipe` (their
    optimizer recipe; by default SuperClass's, the defaults of
    `reference_optimizer`), `score_activation` and `default_loss()`.

    Args:
        backbone: any image encoder `Backbone` whose output dict holds
            `"pooled_output"` (`SuperClassBackbone`, `CRUNetBackbone`).
        vocabulary_size: classes of the head.
        head_mlp_layers: residual MLP blocks before the classifier.
        ignore_ids: class ids that never become targets (special tokens).
        preprocessor: the task's preprocessor (images and captions).
        normalize_images: take raw pixels in [0, 255] and apply the OpenAI
            mean/std on the device; `False`: inputs are already normalised
            (by the preprocessor's image converter).
        compile: compile with the task's recipe on construction.
    """

    task_arguments = (
        "vocabulary_size",
        "head_mlp_layers",
        "ignore_ids",
        "normalize_images",
    )
    head_arguments = ("vocabulary_size", "head_mlp_layers")
    # How `predict_labels` turns logits into scores.
    score_activation = "softmax"
    # The reference recipe; `compile(**overrides)` changes any entry.
    recipe = {
        name: parameter.default
        for name, parameter in inspect.signature(
            reference_optimizer
        ).parameters.items()
        if name != "model"
    }

    def __init__(
        self,
        backbone,
        vocabulary_size,
        head_mlp_layers=0,
        ignore_ids=None,
        preprocessor=None,
        normalize_images=False,
        compile=True,
        **kwargs,
    ):
        check_model_kwargs(type(self), kwargs)
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
        self.build_state(vocabulary_size)

        # === Config ===
        self.vocabulary_size = int(vocabulary_size)
        self.head_mlp_layers = head_mlp_layers
        self.normalize_images = bool(normalize_images)
        self.ignore_ids = sorted(int(i) for i in (ignore_ids or []))
        if compile:
            self.compile()

    def build_state(self, vocabulary_size):
        """Creates state tracked beside the forward pass (e.g. IDF)."""

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        loss_kwargs=None,
        **kwargs,
    ):
        """Compiles with the task's recipe unless told otherwise.

        `"auto"` optimizer: AdamW built by `reference_optimizer` from
        `self.recipe` updated with any recipe keyword given here (e.g.
        `learning_rate`, `warmup_steps`, `total_steps`,
        `gradient_accumulation_steps`). `"auto"` loss: `default_loss()`. A
        loss name (`"softmax"`, `"bce"`, `"asl"`, `"softmargin"`,
        `"twoway"`) builds that loss for this head with `loss_kwargs`.
        `"auto"` metrics: top-5 precision and recall. Other keywords go to
        `keras.Model.compile`.
        """
        optimizer = self.recipe_optimizer(optimizer, kwargs)
        if loss == "auto":
            loss = self.default_loss()
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
        self.check_loss(loss)
        if metrics == "auto":
            k = min(5, self.vocabulary_size)
            metrics = [
                TokenTopKPrecision(k, vocabulary_size=self.vocabulary_size),
                TokenTopKRecall(k, vocabulary_size=self.vocabulary_size),
            ]
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )

    def default_loss(self):
        raise NotImplementedError

    def check_loss(self, loss):
        size = getattr(loss, "vocabulary_size", None)
        if size is not None and size != self.vocabulary_size:
            raise ValueError(
                f"The loss covers a vocabulary of {size} classes but the "
                f"model's head has {self.vocabulary_size}. Build both with "
                f"the tokenizer's vocabulary size."
            )

    def predict_labels(self, images, top_k=5):
        """The `top_k` labels of raw images, as words with scores.

        Args:
            images: uint8 images: a `(B, H, W, 3)` batch or a list of
                `(H, W, 3)` images of any sizes.
            top_k: labels per image.

        Returns:
            One list per image of `{"label": str, "score": float}`, best
            first (softmax scores for SuperClass, sigmoid for CatLIP);
            special tokens are never reported.
        """
        if self.preprocessor is None:
            raise ValueError(
                "This task has no preprocessor, so it cannot name its "
                "labels: load a preset saved with one, or set "
                "`task.preprocessor`."
            )
        batch = self.preprocessor.image_converter(images)
        logits = keras.ops.convert_to_tensor(self.predict(batch, verbose=0))
        activation = keras.activations.get(self.score_activation)
        scores = keras.ops.convert_to_numpy(activation(logits))
        special = set(self.preprocessor.special_ids)
        results = []
        for row in scores:
            order = [i for i in np.argsort(-row) if int(i) not in special]
            results.append(
                [
                    {
                        "label": self.preprocessor.id_to_label(int(i)),
                        "score": float(row[i]),
                    }
                    for i in order[:top_k]
                ]
            )
        return results

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            head_mlp_layers=self.head_mlp_layers,
            ignore_ids=self.ignore_ids,
            normalize_images=self.normalize_images,
        )
        return config
