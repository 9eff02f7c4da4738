"""CRU-Net image classifier preprocessing: the image converter."""

import keras
import keras_hub

from keras_superclass.data.image_converter import SuperClassImageConverter
from keras_superclass.models.crunet.crunet_backbone import CRUNetBackbone


@keras.saving.register_keras_serializable(package="keras_superclass")
class CRUNetImageClassifierPreprocessor(
    keras_hub.models.ImageClassifierPreprocessor
):
    """Raw images -> `CRUNetImageClassifier` inputs; labels pass through.

    Args:
        image_converter: a `SuperClassImageConverter`.

    Example:
    >>> from keras_superclass.layers import SuperClassImageConverter
    >>> preprocessor = CRUNetImageClassifierPreprocessor(
    ...     SuperClassImageConverter(image_size=32, normalize=True)
    ... )
    >>> tuple(preprocessor(np.zeros((2, 50, 40, 3), "uint8")).shape)
    (2, 32, 32, 3)
    """

    backbone_cls = CRUNetBackbone
    image_converter_cls = SuperClassImageConverter
