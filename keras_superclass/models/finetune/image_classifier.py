"""Fine-tuning a pretrained encoder as an image classifier."""

import json
import os

import keras

from keras_superclass.losses.label_smoothing import (
    SparseLabelSmoothingCrossentropy,
)
from keras_superclass.models.multilabel_classifier import MultiLabelClassifier
from keras_superclass.models.multilabel_classifier import PresetTask
from keras_superclass.models.superclass.superclass_backbone import (
    SuperClassBackbone,
)
from keras_superclass.utils import presets as preset_utils
from keras_superclass.utils.optional import LazyClass
from keras_superclass.utils.presets import check_model_kwargs


@keras.saving.register_keras_serializable(package="keras_superclass")
class SuperClassImageClassifier(PresetTask):
    """An image classifier on a pretrained encoder, for fine-tuning.

    keras-hub's `ImageClassifier` layout: `backbone(images)["pooled_output"]`
    (the encoder's own pooling: patch-token mean for SuperClass, class
    token for CatLIP, global average for CRU-Net) -> dropout ->
    `Dense(num_classes)` initialised near zero (std 2e-5, as MAE). Works on
    every encoder of this package. `compile()` defaults to the ViT
    fine-tuning recipe of BEiT / MAE: AdamW (0.9, 0.999), weight decay 0.05
    (none on 1-D weights), linear warmup + cosine, label smoothing 0.1 and
    layer-wise learning-rate decay 0.75 (`LayerDecayAdamW`).

    `from_preset(preset, num_classes=...)` takes:

    - a pretrained preset directory (`save_to_preset` or
      `keras-superclass export` of any task, or a backbone alone): the
      encoder loads with `keras_hub.models.Backbone.from_preset`, images
      are prepared with the preset's own image converter, the head is new;
    - a directory saved by this class: the whole classifier;
    - an architecture name (`superclass_vit_b16`, `catlip_vit_b16`,
      `crunet56`, ...): random initialisation (training from scratch).

    Backbone config overrides (`image_shape`, `dtype`, ...) and
    `resize_method` are accepted too.

    Args:
        backbone: an image encoder `Backbone` with `"pooled_output"`.
        num_classes: classes of the head.
        activation: activation of the head; `None` gives logits.
        dropout: dropout rate before the head.
        preprocessor: a `SuperClassImageClassifierPreprocessor` or `None`.
        compile: compile with the fine-tuning recipe on construction.

    Example:
    >>> model = SuperClassImageClassifier.from_preset(
    ...     "superclass_vit_ti16",
    ...     num_classes=3,
    ...     image_shape=(32, 32, 3),
    ...     num_layers=2,
    ... )
    >>> model.compile(total_steps=100, warmup_steps=5)
    >>> images = np.random.randint(0, 256, (2, 40, 48, 3), "uint8")
    >>> model.predict(images, verbose=0).shape
    (2, 3)
    """

    backbone_cls = SuperClassBackbone
    # Runs on tf.data: imported on use, so the task imports without TF.
    preprocessor_cls = LazyClass(
        "keras_superclass.models.finetune.image_classifier_preprocessor",
        "SuperClassImageClassifierPreprocessor",
    )
    task_arguments = ("num_classes", "activation", "dropout")
    head_arguments = ("num_classes", "activation")
    preprocessor_arguments = ("resize_method",)
    # BEiT / MAE fine-tuning (ViT-B): peak rate for a batch of about 512,
    # scale it with the batch; `compile(**overrides)` changes any entry.
    recipe = dict(
        MultiLabelClassifier.recipe,
        learning_rate=1e-3,
        warmup_steps=0,
        weight_decay=0.05,
        beta_2=0.999,
        epsilon=1e-8,
        min_learning_rate_ratio=1e-3,
        layer_decay=0.75,
    )

    def __init__(
        self,
        backbone,
        num_classes=1000,
        activation=None,
        dropout=0.0,
        preprocessor=None,
        compile=True,
        **kwargs,
    ):
        check_model_kwargs(type(self), kwargs)
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=backbone.dtype_policy, name="output_dropout"
        )
        self.output_dense = keras.layers.Dense(
            int(num_classes),
            activation=activation,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=2e-5),
            dtype=backbone.dtype_policy,
            name="predictions",
        )

        # === Functional model ===
        images = keras.Input(shape=backbone.input_shape[1:], name="images")
        features = backbone(images)["pooled_output"]
        outputs = self.output_dense(self.output_dropout(features))
        super().__init__(
            inputs=images, outputs=outputs, compile=False, **kwargs
        )

        # === Config ===
        self.num_classes = int(num_classes)
        self.activation = activation
        self.dropout = float(dropout)
        if compile:
            self.compile()

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        *,
        label_smoothing=0.1,
        **kwargs,
    ):
        """Compiles with the fine-tuning recipe unless told otherwise.

        `"auto"` optimizer: `reference_optimizer` with `self.recipe`
        updated by any recipe keyword given here (`learning_rate`,
        `warmup_steps`, `total_steps`, `weight_decay`, `layer_decay` (None
        or 1.0 turns it off), ...). `"auto"` loss: cross-entropy of the
        logits with `label_smoothing`. `"auto"` metrics: accuracy. Other
        keywords go to `keras.Model.compile`.
        """
        optimizer = self.recipe_optimizer(optimizer, kwargs)
        if loss == "auto":
            if self.activation is None:
                loss = SparseLabelSmoothingCrossentropy(label_smoothing)
            else:
                loss = keras.losses.SparseCategoricalCrossentropy()
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy("accuracy")]
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )

    def get_config(self):
        config = super().get_config()
        activation = self.activation
        if activation is not None:
            activation = keras.activations.serialize(
                keras.activations.get(activation)
            )
        config.update(
            num_classes=self.num_classes,
            activation=activation,
            dropout=self.dropout,
        )
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds the classifier on a preset's encoder (see the class).

        Args:
            preset: a pretrained preset directory, a directory saved by
                this class, or an architecture preset name.
            load_weights: load the preset's weights.
            **kwargs: `num_classes`, `activation`, `dropout`,
                `preprocessor`, `resize_method` and backbone overrides.
        """
        preset = os.fspath(preset)
        if cls._is_own_preset(preset):
            return preset_utils.load_task_preset(
                cls, preset, load_weights, kwargs
            )
        backbone_cls, architecture = _encoder_source(preset)
        task_kwargs, options, overrides = preset_utils.split_preset_kwargs(
            cls, backbone_cls, kwargs
        )
        if architecture is not None:
            backbone = backbone_cls(**{**architecture, **overrides})
        else:
            import keras_hub

            backbone = keras_hub.models.Backbone.from_preset(
                preset, load_weights=load_weights, **overrides
            )
        if "preprocessor" not in task_kwargs:
            image_size = None
            if "image_shape" in overrides:
                image_size = int(tuple(overrides["image_shape"])[0])
            converter = preset_utils.preset_image_converter(
                preset, backbone, image_size
            )
            if "resize_method" in options:
                config = converter.get_config()
                config.update(resize_method=options["resize_method"])
                converter = type(converter).from_config(config)
            task_kwargs["preprocessor"] = cls.preprocessor_cls(converter)
        return cls(backbone, **task_kwargs)

    @classmethod
    def _is_own_preset(cls, preset):
        path = os.path.join(preset, preset_utils.TASK_CONFIG_FILE)
        if not os.path.isfile(path):
            return False
        with open(path, encoding="utf-8") as f:
            name = json.load(f).get("registered_name")
        saved = keras.saving.get_registered_object(name)
        return saved is not None and issubclass(saved, cls)


def _encoder_source(preset):
    """`(backbone class, architecture dict or None)` of a preset name or
    directory."""
    from keras_superclass.training.builders import _architecture_presets
    from keras_superclass.training.builders import known_presets

    for backbone_cls, presets in _architecture_presets():
        if preset in presets:
            return backbone_cls, presets[preset]["backbone"]
    path = os.path.join(preset, preset_utils.BACKBONE_CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"Unknown preset {preset!r}: not an architecture name "
            f"({', '.join(known_presets())}) nor a preset directory with "
            f"{preset_utils.BACKBONE_CONFIG_FILE} (write one with "
            f"`save_to_preset()` or `keras-superclass export`)."
            f"{preset_utils.did_you_mean(preset, known_presets())}"
        )
    with open(path, encoding="utf-8") as f:
        name = json.load(f)["registered_name"]
    backbone_cls = keras.saving.get_registered_object(name)
    if backbone_cls is None:
        raise ValueError(
            f"{preset} holds a {name} encoder, which is not registered: "
            f"`import keras_superclass` (or the package defining it) first."
        )
    return backbone_cls, None
