"""Predict the tokens (or synsets) of images with a trained task."""

import json
import os

import keras
import numpy as np


def _load_task(preset_dir):
    with open(os.path.join(preset_dir, "task.json"), encoding="utf-8") as f:
        registered = json.load(f).get("registered_name", "")
    if registered.endswith("CatLIPClassifier"):
        from keras_superclass.models.catlip import CatLIPClassifier

        return CatLIPClassifier.from_preset(preset_dir)
    from keras_superclass.models import SuperClassClassifier

    return SuperClassClassifier.from_preset(preset_dir)


class TokenPredictor:
    """Scores the vocabulary of a trained task for raw image files.

    Args:
        model: a `SuperClassClassifier` (or CatLIP task).
        id_to_label: function from class id to its text (a token or the
            lemma of a synset).
        special_ids: ids never reported (special tokens).

    Example:
    >>> predictor = TokenPredictor.from_preset("my_preset")  # doctest: +SKIP
    >>> predictor.predict_files(["cat.jpg"], top_k=3)  # doctest: +SKIP
    [[{'token': 'cat', 'score': 0.41}, ...]]
    """

    def __init__(self, model, id_to_label, special_ids=()):
        self.model = model
        self.id_to_label = id_to_label
        self.special_ids = set(int(i) for i in special_ids)

    @classmethod
    def from_preset(cls, preset_dir):
        """Loads the task and its tokenizer (or synset vocabulary)."""
        if not os.path.isfile(os.path.join(preset_dir, "task.json")):
            raise FileNotFoundError(
                f"{preset_dir} is not a task preset (no task.json). Export "
                f"one with `keras-superclass train --export DIR`."
            )
        model = _load_task(preset_dir)
        synsets = os.path.join(preset_dir, "synset_vocabulary.json")
        if os.path.exists(synsets):
            from keras_superclass.data.synsets import SynsetVocabulary

            vocabulary = SynsetVocabulary.load(synsets)
            return cls(model, vocabulary.lemma)
        from keras_superclass.data.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(preset_dir)
        return cls(
            model,
            lambda i: tokenizer.id_to_token(i).replace("</w>", ""),
            getattr(tokenizer, "special_token_ids", ()),
        )

    def load_images(self, paths):
        """Decodes files and applies the eval transform of the model."""
        import tensorflow as tf

        from keras_superclass.data import transforms

        size = self.model.backbone.input_shape[1]
        images = []
        for path in paths:
            encoded = tf.io.read_file(path)
            try:
                image = transforms.decode_rgb(encoded)
            except tf.errors.InvalidArgumentError:
                raise ValueError(
                    f"{path} is not a decodable image (JPEG, PNG, GIF, BMP "
                    f"or WebP)."
                ) from None
            images.append(transforms.resize_center_crop(image, size).numpy())
        return self.model.prepare_images(np.stack(images))

    def predict(self, images, top_k=10):
        """Top-k `{"token", "score"}` (sigmoid for CatLIP, else softmax)."""
        logits = keras.ops.convert_to_tensor(
            self.model.predict(images, verbose=0)
        )
        if type(self.model).__name__ == "CatLIPClassifier":
            scores = keras.ops.sigmoid(logits)
        else:
            scores = keras.ops.softmax(logits, axis=-1)
        scores = keras.ops.convert_to_numpy(scores)
        results = []
        for row in scores:
            order = [i for i in np.argsort(-row) if i not in self.special_ids]
            results.append(
                [
                    {"token": self.id_to_label(int(i)), "score": float(row[i])}
                    for i in order[:top_k]
                ]
            )
        return results

    def predict_files(self, paths, top_k=10):
        return self.predict(self.load_images(paths), top_k=top_k)
