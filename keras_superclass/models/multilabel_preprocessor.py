"""Shared preprocessing of the multi-label tasks (SuperClass, CatLIP)."""

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from keras_superclass.data.image_converter import SuperClassImageConverter
from keras_superclass.data.image_converter import to_backend

PAD_ID = -1


def is_text(value):
    """Whether `value` holds strings (captions) rather than label ids."""
    if isinstance(value, tf.Tensor | tf.RaggedTensor):
        return value.dtype == tf.string
    if isinstance(value, str | bytes):
        return True
    if isinstance(value, list | tuple):
        return bool(value) and isinstance(value[0], str | bytes)
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "USO"
    return False


class MultiLabelPreprocessor(keras_hub.models.Preprocessor):
    """Images -> task inputs; captions -> padded label-id sets.

    `preprocessor(images)` prepares images with `image_converter`;
    `preprocessor(images, captions)` also turns each caption into the set
    of its class ids, padded with -1 to `max_labels` (the form the tasks'
    losses take). Label ids pass through unchanged and the converter leaves
    prepared images alone, so applying the preprocessor twice changes
    nothing. Works eagerly and inside `tf.data` on every backend.

    Subclasses implement `caption_labels(captions)` (ragged or padded
    int32 ids of a `(B,)` string batch) and `id_to_label(i)`.

    Args:
        image_converter: a `SuperClassImageConverter`.
        max_labels: label slots per caption (extra classes are dropped).
    """

    image_converter_cls = SuperClassImageConverter

    def __init__(self, image_converter=None, max_labels=64, **kwargs):
        super().__init__(**kwargs)
        self.image_converter = image_converter
        self.max_labels = int(max_labels)
        self.built = True  # no weights: nothing to build

    def caption_labels(self, captions):
        raise NotImplementedError

    def id_to_label(self, class_id):
        raise NotImplementedError

    def labels(self, captions):
        """Padded `(B, max_labels)` int32 class ids of string captions."""
        captions = tf.convert_to_tensor(captions, dtype=tf.string)
        single = captions.shape.rank == 0
        if single:
            captions = captions[None]
        ids = self.caption_labels(captions)
        if isinstance(ids, tf.RaggedTensor):
            ids = ids[:, : self.max_labels].to_tensor(
                default_value=PAD_ID, shape=[None, self.max_labels]
            )
        ids = tf.ensure_shape(tf.cast(ids, tf.int32), [None, self.max_labels])
        return ids[0] if single else ids

    def call(self, x, y=None, sample_weight=None):
        if self.image_converter is not None:
            x = self.image_converter(x)
        if y is not None and is_text(y):
            y = to_backend(self.labels(y))
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def label_names(self, class_ids):
        """Readable names of class ids (tokens or synset lemmas)."""
        return [self.id_to_label(int(i)) for i in class_ids]

    @property
    def special_ids(self):
        """Class ids never reported as predictions (special tokens)."""
        return ()

    def get_config(self):
        config = super().get_config()
        config.update(max_labels=self.max_labels)
        return config
