"""CatLIP preprocessing: image converter + WordNet synset labeller."""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_superclass.data import python_ops
from keras_superclass.models.multilabel_preprocessor import (
    MultiLabelPreprocessor,
)

# Where a preset keeps the synset vocabulary (keras-hub's assets layout).
SYNSET_ASSET_DIR = os.path.join("assets", "synsets")
SYNSET_VOCABULARY_FILE = "synset_vocabulary.json"


@keras.saving.register_keras_serializable(package="keras_superclass")
class SynsetLabeler(keras.layers.Layer):
    """Captions -> class ids of their WordNet synsets (corenet's rules).

    Holds a `SynsetVocabulary`; saved into a preset's assets, so a loaded
    CatLIP preset labels captions and names its predictions by lemma.
    Labelling runs NLTK in Python (through `tf.numpy_function` inside
    `tf.data`).

    Args:
        vocabulary: a `SynsetVocabulary`, the path of its JSON file, or
            `None` (loaded later from a preset's assets).
    """

    def __init__(self, vocabulary=None, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = None
        self.built = True  # no weights: nothing to build
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    def set_vocabulary(self, vocabulary):
        from keras_superclass.data.synsets import SynsetVocabulary
        from keras_superclass.data.synsets import check_wordnet

        if not isinstance(vocabulary, SynsetVocabulary):
            vocabulary = SynsetVocabulary.load(vocabulary)
        check_wordnet()  # loads WordNet before tf.data calls in parallel
        self.vocabulary = vocabulary

    def _check(self):
        if self.vocabulary is None:
            raise ValueError(
                "The synset labeller has no vocabulary: build one with "
                "`keras-superclass synsets --captions ... --out "
                "synsets.json` and pass it (config key "
                "`data.synset_vocabulary`)."
            )

    def vocabulary_size(self):
        self._check()
        return len(self.vocabulary)

    def _label_batch(self, captions):
        rows = [self.vocabulary.labels(c.decode("utf-8")) for c in captions]
        lengths = np.asarray([len(r) for r in rows], np.int64)
        values = np.asarray([i for r in rows for i in r], np.int32)
        return values, lengths

    def label(self, captions):
        """`(B,)` strings -> ragged int32 class ids (TF, any backend)."""
        self._check()
        captions = tf.convert_to_tensor(captions, tf.string)
        values, lengths = python_ops.numpy_function(
            self._label_batch, [captions], (tf.int32, tf.int64)
        )
        values = tf.ensure_shape(values, [None])
        lengths = tf.ensure_shape(lengths, [None])
        return tf.RaggedTensor.from_row_lengths(values, lengths)

    def id_to_label(self, class_id):
        self._check()
        entry = self.vocabulary.entries[class_id]
        return entry["lemma"] or entry["key"]

    def save_to_preset(self, preset_dir):
        self._check()
        self.vocabulary.save(
            os.path.join(preset_dir, SYNSET_ASSET_DIR, SYNSET_VOCABULARY_FILE)
        )

    def load_preset_assets(self, preset):
        path = os.path.join(preset, SYNSET_ASSET_DIR, SYNSET_VOCABULARY_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{preset} holds no synset vocabulary ({path}); it was not "
                f"saved from a CatLIP task with a preprocessor."
            )
        self.set_vocabulary(path)


@keras.saving.register_keras_serializable(package="keras_superclass")
class CatLIPPreprocessor(MultiLabelPreprocessor):
    """Images -> task inputs; captions -> the class ids of their synsets.

    Args:
        image_converter: a `SuperClassImageConverter`.
        synset_labeler: a `SynsetLabeler` (or a `SynsetVocabulary` / its
            JSON path).
        max_labels: label slots per caption.
    """

    def __init__(
        self,
        image_converter=None,
        synset_labeler=None,
        max_labels=64,
        **kwargs,
    ):
        super().__init__(image_converter, max_labels=max_labels, **kwargs)
        if isinstance(synset_labeler, dict):
            synset_labeler = keras.layers.deserialize(synset_labeler)
        elif synset_labeler is not None and not isinstance(
            synset_labeler, SynsetLabeler
        ):
            synset_labeler = SynsetLabeler(synset_labeler)
        self.synset_labeler = synset_labeler

    def caption_labels(self, captions):
        if self.synset_labeler is None:
            raise ValueError(
                "This preprocessor has no synset vocabulary, so it cannot "
                "turn captions into labels."
            )
        return self.synset_labeler.label(captions)

    def id_to_label(self, class_id):
        return self.synset_labeler.id_to_label(class_id)

    def vocabulary_size(self):
        return self.synset_labeler.vocabulary_size()

    def get_config(self):
        config = super().get_config()
        if self.synset_labeler is not None:
            config["synset_labeler"] = keras.layers.serialize(
                self.synset_labeler
            )
        return config
