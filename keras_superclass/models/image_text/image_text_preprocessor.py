"""Image-text preprocessing: image converter + caption token sequences."""

import keras
import keras_hub
import tensorflow as tf

from keras_superclass.data import tokenizers
from keras_superclass.data.image_converter import SuperClassImageConverter
from keras_superclass.data.image_converter import to_backend
from keras_superclass.data.labels import make_sequence_fn
from keras_superclass.models.multilabel_preprocessor import is_text

CONTEXT_LENGTH = 77


@keras.saving.register_keras_serializable(package="keras_superclass")
class ImageTextPreprocessor(keras_hub.models.Preprocessor):
    """Images + captions -> `{"images", "token_ids"}` for a text tower.

    `preprocessor(images, captions)` prepares the images with
    `image_converter` and tokenizes each caption into `sequence_length`
    ids (CLIP BPE: `[SOT] ids [EOT]` padded with 0), returning
    `x = {"images", "token_ids"}` and no labels: the contrastive pair of
    image `i` is caption `i`. Token ids and prepared images pass through,
    so mapping it twice changes nothing. `labels(captions)` gives the
    `(B, L)` ids alone (what `image_text_dataset(preprocessor=...)` ships
    next to the images) and `tokenize(texts)` the same as a backend
    tensor (prompts for zero-shot). Saved with the task's preset,
    tokenizer included.

    Args:
        image_converter: a `SuperClassImageConverter`.
        tokenizer: a tokenizer of `keras_superclass.data.tokenizers` or a
            kind name (`"clip"` is built with `sequence_length`).
        sequence_length: the text tower's context length (77).

    Example:
    >>> preprocessor = ImageTextPreprocessor(
    ...     SuperClassImageConverter(image_size=32), "clip", sequence_length=6
    ... )
    >>> x = preprocessor(np.zeros((1, 40, 40, 3), "uint8"), ["a cat"])
    >>> keras.ops.convert_to_numpy(x["token_ids"]).tolist()
    [[49406, 320, 2368, 49407, 0, 0]]
    """

    image_converter_cls = SuperClassImageConverter

    def __init__(
        self,
        image_converter=None,
        tokenizer="clip",
        sequence_length=CONTEXT_LENGTH,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sequence_length = int(sequence_length)
        if tokenizer == "clip":
            tokenizer = tokenizers.get_tokenizer(
                "clip", sequence_length=self.sequence_length
            )
        elif isinstance(tokenizer, str):
            tokenizer = tokenizers.load_tokenizer(tokenizer)
        self.image_converter = image_converter
        self.tokenizer = tokenizer
        self._sequence_fn = None
        self.built = True  # no weights: nothing to build

    @property
    def max_labels(self):
        """Length of what `labels` returns (the readers pad to it)."""
        return self.sequence_length

    def labels(self, captions):
        """`(B, sequence_length)` int32 token ids of string captions."""
        if self.tokenizer is None:
            raise ValueError(
                "This preprocessor has no tokenizer, so it cannot tokenize "
                "captions: build it with `tokenizer=` or pass token ids."
            )
        if self._sequence_fn is None:
            self._sequence_fn = make_sequence_fn(
                self.tokenizer, self.sequence_length
            )
        return self._sequence_fn(captions)

    def tokenize(self, texts):
        """Token ids of a list of texts as a backend tensor `(N, L)`."""
        return to_backend(self.labels(tf.constant(list(texts), tf.string)))

    def call(self, x, y=None, sample_weight=None):
        if isinstance(x, dict):  # already prepared
            return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
        if y is None:
            raise ValueError(
                "An image-text model takes images with their captions: call "
                "preprocessor(images, captions) (or token ids), or encode "
                "one side with model.encode_images / encode_texts."
            )
        images = x
        if self.image_converter is not None:
            images = self.image_converter(images)
        token_ids = y
        if is_text(y):
            token_ids = to_backend(self.labels(y))
        inputs = {"images": images, "token_ids": token_ids}
        return keras.utils.pack_x_y_sample_weight(inputs, None, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(sequence_length=self.sequence_length)
        return config
