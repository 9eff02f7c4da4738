"""Shared pieces of the caption tokenizers."""

import os

import tensorflow as tf

PACKAGE = "keras_superclass"

# Where `save_to_preset()` puts a tokenizer: `<dir>/tokenizer.json` and its
# files under `<dir>/assets/tokenizer/` (the keras-hub preset layout).
TOKENIZER_CONFIG_FILE = "tokenizer.json"
TOKENIZER_ASSET_DIR = os.path.join("assets", "tokenizer")


def missing_vocabulary_error(tokenizer, argument):
    """The error for a trainable tokenizer used before it has a vocabulary.

    Command-line users read it too, so it names both the Python argument and
    the `keras-superclass vocab` + `data.tokenizer` route.

    Args:
        tokenizer: the tokenizer (its class name and `kind` are used).
        argument: the constructor argument that takes the vocabulary.
    """
    name = type(tokenizer).__name__
    return ValueError(
        f"{name} has no vocabulary: in Python pass `{argument}=` or learn "
        f"one with `{name}.train(captions)`; on the command line learn one "
        f"with `keras-superclass vocab --kind {tokenizer.kind} --captions "
        f"'shards/*.tfrecord' --out tok/` and use it with the config key "
        f"`data.tokenizer=tok/`."
    )


def as_string_tensor(inputs):
    """`inputs` (str, bytes, list, NumPy or tf) as a `tf.string` tensor."""
    if isinstance(inputs, tf.Tensor | tf.RaggedTensor):
        if inputs.dtype != tf.string:
            raise ValueError(
                f"Tokenizers take strings, got a tensor of {inputs.dtype}."
            )
        return inputs
    return tf.convert_to_tensor(inputs, dtype=tf.string)


def ragged_or_padded(values, row_lengths, sequence_length, pad_id, rank):
    """Flat ids + row lengths -> padded `(..., L)` or ragged ids.

    Args:
        values: `(N,)` int32 ids of all rows.
        row_lengths: `(B,)` lengths.
        sequence_length: pad/truncate to this length, or `None` for ragged.
        pad_id: padding value.
        rank: rank of the string input (0 for a scalar caption).
    """
    ragged = tf.RaggedTensor.from_row_lengths(values, row_lengths)
    if sequence_length:
        ids = ragged.to_tensor(
            default_value=pad_id, shape=[None, sequence_length]
        )
        return ids[0] if rank == 0 else ids
    return ragged[0] if rank == 0 else ragged
