"""CRU-Net image classifier: backbone + linear head."""

import keras
from keras_hub.models import Task

from keras_superclass.models.crunet.crunet_backbone import CRUNetBackbone
from keras_superclass.models.crunet.crunet_presets import backbone_presets
from keras_superclass.utils.presets import build_task_from_preset
from keras_superclass.utils.presets import resolve_preset


@keras.saving.register_keras_serializable(package="keras_superclass")
class CRUNetImageClassifier(Task):
    """Image classifier: `CRUNetBackbone` -> `Dense(num_classes)`.

    The head is a fully connected layer with bias on the backbone's
    `"pooled_output"` (after its final BN-ReLU and global average pool), as
    the reference network.

    Args:
        backbone: a `CRUNetBackbone` (any backbone with `"pooled_output"`
            works).
        num_classes: classes of the head.
        activation: activation of the head; `None` gives logits.
        preprocessor: optional preprocessing layer.
        compile: compile with the defaults of `compile()` on construction.

    Example:
    >>> model = CRUNetImageClassifier.from_preset("crunet56", num_classes=1000)
    >>> model.predict(keras.ops.zeros((1, 224, 224, 3))).shape
    (1, 1000)
    """

    backbone_cls = CRUNetBackbone
    architecture_presets = backbone_presets

    def __init__(
        self,
        backbone,
        num_classes=1000,
        activation=None,
        preprocessor=None,
        compile=True,
        **kwargs,
    ):
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dense = keras.layers.Dense(
            int(num_classes),
            activation=activation,
            dtype=backbone.dtype_policy,
            name="predictions",
        )

        # === Functional model ===
        images = keras.Input(shape=backbone.input_shape[1:], name="images")
        features = backbone(images)["pooled_output"]
        outputs = self.output_dense(features)
        super().__init__(
            inputs=images, outputs=outputs, compile=False, **kwargs
        )

        # === Config ===
        self.num_classes = int(num_classes)
        self.activation = activation
        if compile:
            self.compile()

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        *,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        **kwargs,
    ):
        """Compiles with the usual ImageNet ResNet(X) recipe by default.

        `"auto"` optimizer: SGD with momentum `momentum` and
        `learning_rate` (0.1 is the batch-256 rate) and weight decay on
        weights with ndim >= 2. `"auto"` loss: sparse categorical
        cross-entropy (from logits unless the head ends in a softmax).
        `"auto"` metrics: sparse categorical accuracy.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.SGD(
                learning_rate=learning_rate,
                momentum=momentum,
                weight_decay=weight_decay,
            )
            optimizer.exclude_from_weight_decay(
                var_list=[
                    v for v in self.trainable_variables if len(v.shape) < 2
                ]
            )
        if loss == "auto":
            activation = keras.activations.get(self.activation)
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=activation is not keras.activations.softmax
            )
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy()]
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            activation=keras.activations.serialize(
                keras.activations.get(self.activation)
            )
            if self.activation is not None
            else None,
        )
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds an architecture preset or loads a preset directory.

        Args:
            preset: a name from `architecture_presets` (random init) or a
                directory written by `save_to_preset`.
            load_weights: load weights from a preset directory.
            **kwargs: task arguments (`num_classes`, `activation`, ...) and
                backbone config overrides (`image_shape`, `share`, ...).

        Example:
        >>> model = CRUNetImageClassifier.from_preset(
        ...     "crunet_tiny", num_classes=10
        ... )
        """
        config = resolve_preset(preset, cls.architecture_presets, cls)
        if config is None:
            return super().from_preset(preset, load_weights, **kwargs)
        return build_task_from_preset(
            cls, config, kwargs, ("num_classes", "activation")
        )
