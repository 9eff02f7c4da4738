from keras_superclass.models.superclass.superclass_backbone import (
    SuperClassBackbone,
)
from keras_superclass.models.superclass.superclass_classifier import (
    SuperClassClassifier,
)
