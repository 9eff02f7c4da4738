"""SentencePiece tokenizer with a model trained on captions."""

import keras
import keras_hub

from keras_superclass.data.tokenizers.base import missing_vocabulary_error


@keras.saving.register_keras_serializable(package="keras_superclass")
class SentencePieceTokenizer(keras_hub.tokenizers.SentencePieceTokenizer):
    """keras-hub's `SentencePieceTokenizer` for caption labels.

    Adds `special_token_ids` (control and unknown pieces: pad, unk, bos,
    eos; never labels) and `train()`, which trains a model on captions with
    `keras_hub.tokenizers.compute_sentence_piece_proto` (case-folding
    normalisation when `lowercase=True`).

    Args:
        proto: a serialized SentencePiece model (bytes) or its file.
        sequence_length: pad/truncate to this length, or `None` (ragged).
        **kwargs: other `keras_hub.tokenizers.SentencePieceTokenizer` args.

    Example:
    >>> captions = ["a cat on a mat", "a dog on a log", "two red cats"]
    >>> tok = SentencePieceTokenizer.train(captions * 10, 20)
    >>> tok.vocabulary_size(), tok.special_token_ids
    (20, [0, 1, 2, 3])
    """

    kind = "sentencepiece"

    @classmethod
    def train(
        cls,
        captions,
        vocabulary_size=32000,
        model_type="unigram",
        lowercase=True,
        **kwargs,
    ):
        """Trains a SentencePiece model of `vocabulary_size` pieces.

        `captions`: an iterable of strings or a `tf.data.Dataset` of them.
        """
        from keras_superclass.data.document_frequency import captions_dataset

        try:
            proto = keras_hub.tokenizers.compute_sentence_piece_proto(
                captions_dataset(captions),
                vocabulary_size,
                model_type=model_type,
                lowercase=lowercase,
            )
        except RuntimeError as error:
            raise ValueError(
                f"SentencePiece training failed ({error}). With few captions "
                f"use a smaller `vocabulary_size` (`--size` of "
                f"`keras-superclass vocab`)."
            ) from error
        return cls(proto=proto, **kwargs)

    def _check_vocabulary(self):
        if self.proto is None:
            raise missing_vocabulary_error(self, "proto")

    @property
    def special_token_ids(self):
        """Control and unknown pieces (`<pad>`, `<unk>`, `<s>`, `</s>`)."""
        self._check_vocabulary()
        spm = self._sentence_piece_spm
        return [
            i
            for i in range(self.vocabulary_size())
            if spm.IsControl(i) or spm.IsUnknown(i)
        ]
