"""WordPiece tokenizer with a vocabulary learned from captions."""

import keras
import keras_hub

from keras_superclass.data.tokenizers.base import missing_vocabulary_error

PAD_TOKEN = "[PAD]"
OOV_TOKEN = "[UNK]"
RESERVED_TOKENS = (PAD_TOKEN, OOV_TOKEN)


@keras.saving.register_keras_serializable(package="keras_superclass")
class WordPieceTokenizer(keras_hub.tokenizers.WordPieceTokenizer):
    """keras-hub's `WordPieceTokenizer` (lowercase) for caption labels.

    Adds `special_token_ids` (the reserved tokens such as `[PAD]` and
    `[UNK]`, never labels) and `train()`, which learns a vocabulary from
    captions with `keras_hub.tokenizers.compute_word_piece_vocabulary`.

    Args:
        vocabulary: list of tokens or a vocabulary file.
        sequence_length: pad/truncate to this length, or `None` (ragged).
        lowercase: lowercase the captions first.
        **kwargs: other `keras_hub.tokenizers.WordPieceTokenizer` args.

    Example:
    >>> tok = WordPieceTokenizer(["[PAD]", "[UNK]", "a", "cat", "##s"])
    >>> [int(i) for i in tok.tokenize("A cats?")]
    [2, 3, 4, 1]
    >>> tok.special_token_ids
    [0, 1]
    """

    kind = "wordpiece"

    def __init__(
        self,
        vocabulary=None,
        sequence_length=None,
        lowercase=True,
        oov_token=OOV_TOKEN,
        **kwargs,
    ):
        super().__init__(
            vocabulary=vocabulary,
            sequence_length=sequence_length,
            lowercase=lowercase,
            oov_token=oov_token,
            **kwargs,
        )

    @classmethod
    def train(
        cls,
        captions,
        vocabulary_size=32000,
        lowercase=True,
        reserved_tokens=RESERVED_TOKENS,
        **kwargs,
    ):
        """Learns a WordPiece vocabulary of `vocabulary_size` from captions.

        `captions`: an iterable of strings or a `tf.data.Dataset` of them.
        """
        from keras_superclass.data.document_frequency import captions_dataset

        vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
            captions_dataset(captions).batch(1024),
            vocabulary_size,
            lowercase=lowercase,
            reserved_tokens=list(reserved_tokens),
        )
        if len(vocabulary) <= len(reserved_tokens):
            raise ValueError(
                "No WordPiece vocabulary could be learned: the captions are "
                "empty."
            )
        return cls(vocabulary=vocabulary, lowercase=lowercase, **kwargs)

    def _check_vocabulary(self):
        if self.vocabulary is None:
            raise missing_vocabulary_error(self, "vocabulary")

    @property
    def pad_token_id(self):
        return self._token_to_id_map.get(PAD_TOKEN, 0)

    @property
    def special_token_ids(self):
        """Ids of bracketed reserved tokens (`[PAD]`, `[UNK]`, ...)."""
        self._check_vocabulary()
        ids = [
            i
            for i, token in enumerate(self.vocabulary)
            if token.startswith("[") and token.endswith("]") and len(token) > 2
        ]
        oov = self._token_to_id_map[self.oov_token]
        return sorted(set(ids) | {oov})
