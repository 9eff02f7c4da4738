from keras_superclass.models.crunet.crunet_backbone import CRUNetBackbone
from keras_superclass.models.crunet.crunet_image_classifier import (
    CRUNetImageClassifier,
)
from keras_superclass.models.crunet.crunet_layers import CollectiveResidualUnit
from keras_superclass.models.crunet.crunet_layers import PreActResNeXtUnit
from keras_superclass.models.crunet.crunet_layers import SharedCRUFactors
from keras_superclass.models.crunet.crunet_presets import backbone_presets
