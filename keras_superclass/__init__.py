"""keras_superclass: classification-based vision-language pre-training.

SuperClass, CatLIP and CRU-Net for Keras 3 on JAX, TensorFlow and PyTorch.
Importing the package registers every model, layer and loss with Keras, so
`keras_hub.models.Backbone.from_preset(dir)` can load saved presets.
"""

# ruff: noqa: E402
# First, before any XLA compilation or TensorFlow import: the measured
# CPU kernel defaults.
from keras_superclass.utils import xla_flags

xla_flags.set_cpu_matmul_default()
xla_flags.set_tensorflow_onednn_default()

# Then the command line hides TensorFlow's start-up log lines, which
# has to happen before the imports below load TensorFlow.
from keras_superclass import cli
from keras_superclass import layers
from keras_superclass import losses
from keras_superclass import metrics
from keras_superclass import models
from keras_superclass.losses import SuperClassLoss
from keras_superclass.models import CatLIPClassifier
from keras_superclass.models import CRUNetBackbone
from keras_superclass.models import CRUNetImageClassifier
from keras_superclass.models import SuperClassBackbone
from keras_superclass.models import SuperClassClassifier
from keras_superclass.version import __version__
