"""SuperClass preprocessing: image converter + caption tokenizer."""

import keras

from keras_superclass.data import tokenizers
from keras_superclass.data.labels import make_label_fn
from keras_superclass.models.multilabel_preprocessor import PAD_ID
from keras_superclass.models.multilabel_preprocessor import (
    MultiLabelPreprocessor,
)


@keras.saving.register_keras_serializable(package="keras_superclass")
class SuperClassPreprocessor(MultiLabelPreprocessor):
    """Images -> task inputs; captions -> the set of their token ids.

    The label of a caption is the set of its subword ids (special tokens
    dropped), padded with -1 to `max_labels`: what `SuperClassLoss` takes.
    Saved with the task's preset (tokenizer assets included), so a loaded
    preset can `predict` raw images and name the predicted tokens.

    Args:
        image_converter: a `SuperClassImageConverter`.
        tokenizer: a tokenizer of `keras_superclass.data.tokenizers` or a
            kind name (`"clip"` needs no vocabulary file).
        max_labels: label slots per caption.

    Example:
    >>> from keras_superclass.layers import SuperClassImageConverter
    >>> preprocessor = SuperClassPreprocessor(
    ...     SuperClassImageConverter(image_size=32), tokenizer="clip"
    ... )
    >>> images, labels = preprocessor(
    ...     np.zeros((1, 40, 40, 3), "uint8"), ["a cat, a cat"]
    ... )
    >>> keras.ops.convert_to_numpy(labels)[0, :4].tolist()
    [320, 2368, 267, -1]
    """

    def __init__(
        self, image_converter=None, tokenizer=None, max_labels=64, **kwargs
    ):
        super().__init__(image_converter, max_labels=max_labels, **kwargs)
        if isinstance(tokenizer, str):
            tokenizer = tokenizers.load_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self._label_fn = None

    def caption_labels(self, captions):
        if self.tokenizer is None:
            raise ValueError(
                "This preprocessor has no tokenizer, so it cannot turn "
                "captions into labels: build it with `tokenizer=` or pass "
                "label ids."
            )
        if self._label_fn is None:
            self._label_fn = make_label_fn(
                self.tokenizer, max_labels=self.max_labels, pad_id=PAD_ID
            )
        return self._label_fn(captions)

    def id_to_label(self, class_id):
        # CLIP's byte-level symbols are not text: decode them.
        if hasattr(self.tokenizer, "token_text"):
            return self.tokenizer.token_text(class_id)
        return self.tokenizer.id_to_token(class_id).replace("</w>", "")

    @property
    def special_ids(self):
        return tuple(getattr(self.tokenizer, "special_token_ids", ()))

    def vocabulary_size(self):
        return self.tokenizer.vocabulary_size()
