"""CRU-Net image classifier: backbone + linear head."""

import keras

from keras_superclass.models.crunet.crunet_backbone import CRUNetBackbone
from keras_superclass.models.crunet.crunet_presets import backbone_presets
from keras_superclass.models.multilabel_classifier import PresetTask
from keras_superclass.utils.optional import LazyClass
from keras_superclass.utils.presets import check_model_kwargs


@keras.saving.register_keras_serializable(package="keras_superclass")
class CRUNetImageClassifier(PresetTask):
    """Image classifier: `CRUNetBackbone` -> `Dense(num_classes)`.

    The head is a fully connected layer with bias on the backbone's
    `"pooled_output"` (after its final BN-ReLU and global average pool), as
    the reference network.

    Args:
        backbone: a `CRUNetBackbone` (any backbone with `"pooled_output"`
            works).
        num_classes: classes of the head.
        activation: activation of the head; `None` gives logits.
        preprocessor: a `CRUNetImageClassifierPreprocessor` (raw images
            -> normalised inputs), or `None`.
        compile: compile with the defaults of `compile()` on construction.

    Example:
    >>> model = CRUNetImageClassifier.from_preset(
    ...     "crunet_tiny", num_classes=10, image_shape=(32, 32, 3)
    ... )
    >>> images = np.random.randint(0, 256, (2, 40, 48, 3), "uint8")
    >>> model.predict(images, verbose=0).shape
    (2, 10)
    """

    backbone_cls = CRUNetBackbone
    # Runs on tf.data: imported on use, so the task imports without TF.
    preprocessor_cls = LazyClass(
        "keras_superclass.models.crunet.crunet_image_classifier_preprocessor",
        "CRUNetImageClassifierPreprocessor",
    )
    architecture_presets = backbone_presets
    task_arguments = ("num_classes", "activation")
    head_arguments = ("num_classes", "activation")
    preprocessor_arguments = ("resize_method",)

    def __init__(
        self,
        backbone,
        num_classes=1000,
        activation=None,
        preprocessor=None,
        compile=True,
        **kwargs,
    ):
        check_model_kwargs(type(self), kwargs)
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
    def default_preprocessor(cls, backbone, task_kwargs, options):
        # The classifier takes normalised images: the converter does it.
        converter = cls.image_converter_for(backbone, False, options)
        return cls.preprocessor_cls(converter)
