"""Cross-entropy of integer class labels with label smoothing."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_superclass")
class SparseLabelSmoothingCrossentropy(keras.losses.Loss):
    """Softmax cross-entropy of logits against smoothed integer labels.

    The target puts `1 - label_smoothing` on the true class plus
    `label_smoothing / num_classes` on every class, as
    `keras.losses.CategoricalCrossentropy(label_smoothing=...)` on one-hot
    labels, but takes class ids `(B,)` (what `labelled_image_dataset`
    yields). Computes in float32.

    Args:
        label_smoothing: mass spread over all classes (0.1 in the ViT
            fine-tuning recipes).

    Example:
    >>> loss = SparseLabelSmoothingCrossentropy(label_smoothing=0.0)
    >>> logits = np.array([[0.0, 0.0]], "float32")
    >>> round(float(loss(np.array([1]), logits)), 4)
    0.6931
    """

    def __init__(
        self,
        label_smoothing=0.1,
        name="sparse_label_smoothing_crossentropy",
        **kwargs,
    ):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1), got {label_smoothing}."
            )
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        num_classes = ops.shape(logits)[-1]
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        target = ops.one_hot(labels, num_classes, dtype="float32")
        if self.label_smoothing:
            target = target * (
                1.0 - self.label_smoothing
            ) + self.label_smoothing / ops.cast(num_classes, "float32")
        return -ops.sum(target * ops.log_softmax(logits, axis=-1), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(label_smoothing=self.label_smoothing)
        return config
