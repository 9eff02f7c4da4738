from keras_superclass.data.image_normalization import ImageNormalization
from keras_superclass.layers.idf_statistics import IDFStatistics
from keras_superclass.layers.token_head import ResidualMLPBlock
from keras_superclass.layers.token_head import TokenHead
from keras_superclass.utils.optional import has_tensorflow
from keras_superclass.utils.optional import lazy_module_getattr

# The image converter runs on tf.data (it lives with the data pipeline):
# imported when TensorFlow is there, else resolved on use with a clear error.
_NEEDS_TENSORFLOW = {
    "SuperClassImageConverter": "keras_superclass.data.image_converter",
}
if has_tensorflow():
    from keras_superclass.data.image_converter import SuperClassImageConverter
else:
    __getattr__ = lazy_module_getattr(__name__, _NEEDS_TENSORFLOW)
