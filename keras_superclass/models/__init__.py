from keras_superclass.models.catlip.catlip_classifier import CatLIPClassifier
from keras_superclass.models.catlip.catlip_preprocessor import (
    CatLIPPreprocessor,
)
from keras_superclass.models.catlip.catlip_preprocessor import SynsetLabeler
from keras_superclass.models.crunet.crunet_backbone import CRUNetBackbone
from keras_superclass.models.crunet.crunet_image_classifier import (
    CRUNetImageClassifier,
)
from keras_superclass.models.crunet.crunet_image_classifier_preprocessor import (  # noqa: E501
    CRUNetImageClassifierPreprocessor,
)
from keras_superclass.models.image_text.image_text_model import ImageTextModel
from keras_superclass.models.image_text.image_text_preprocessor import (
    ImageTextPreprocessor,
)
from keras_superclass.models.image_text.text_encoder import OpenCLIPTextEncoder
from keras_superclass.models.multilabel_classifier import MultiLabelClassifier
from keras_superclass.models.superclass.conv_stem import ConvStem
from keras_superclass.models.superclass.superclass_backbone import (
    SuperClassBackbone,
)
from keras_superclass.models.superclass.superclass_classifier import (
    SuperClassClassifier,
)
from keras_superclass.models.superclass.superclass_preprocessor import (
    SuperClassPreprocessor,
)
