# The image layers live with the data pipeline, which runs them too.
from keras_superclass.data.image_converter import ImageNormalization
from keras_superclass.data.image_converter import SuperClassImageConverter
from keras_superclass.layers.idf_statistics import IDFStatistics
from keras_superclass.layers.token_head import ResidualMLPBlock
from keras_superclass.layers.token_head import TokenHead
