"""Preprocessing of the fine-tuning classifier: the image converter."""

import keras
import keras_hub

from keras_superclass.data.image_converter import SuperClassImageConverter
from keras_superclass.models.superclass.superclass_backbone import (
    SuperClassBackbone,
)


@keras.saving.register_keras_serializable(package="keras_superclass")
class SuperClassImageClassifierPreprocessor(
    keras_hub.models.ImageClassifierPreprocessor
):
    """Raw images -> `SuperClassImageClassifier` inputs; labels pass.

    Args:
        image_converter: a `SuperClassImageConverter` that normalises (the
            pretrained task's converter, so images are prepared as in
            pretraining).

    Example:
    >>> from keras_superclass.layers import SuperClassImageConverter
    >>> preprocessor = SuperClassImageClassifierPreprocessor(
    ...     SuperClassImageConverter(image_size=32, normalize=True)
    ... )
    >>> tuple(preprocessor(np.zeros((2, 50, 40, 3), "uint8")).shape)
    (2, 32, 32, 3)
    """

    backbone_cls = SuperClassBackbone
    image_converter_cls = SuperClassImageConverter
