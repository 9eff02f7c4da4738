"""Caption tokenizers: CLIP BPE, WordPiece, SentencePiece and words.

Every tokenizer is a `keras_hub.tokenizers.Tokenizer` registered under the
package "keras_superclass". It maps a `tf.string` caption (or a `(B,)`
batch) to int32 ids inside `tf.data` on every backend, exposes
`special_token_ids` (ids that never become labels) and `kind`, and saves as
keras-hub preset files (`tokenizer.json` + `assets/tokenizer/`).

Example:
>>> import os, tempfile
>>> tokenizer = get_tokenizer("clip")
>>> preset_dir = os.path.join(tempfile.mkdtemp(), "my_tokenizer")
>>> tokenizer.save_to_preset(preset_dir)
>>> load_tokenizer(preset_dir).kind
'clip'
"""

import json
import os

import keras

from keras_superclass.data.tokenizers.base import TOKENIZER_ASSET_DIR
from keras_superclass.data.tokenizers.base import TOKENIZER_CONFIG_FILE
from keras_superclass.data.tokenizers.clip_tokenizer import CLIPTokenizer
from keras_superclass.data.tokenizers.clip_tokenizer import default_bpe_path
from keras_superclass.data.tokenizers.sentencepiece_tokenizer import (
    SentencePieceTokenizer,
)
from keras_superclass.data.tokenizers.word_tokenizer import WordTokenizer
from keras_superclass.data.tokenizers.wordpiece_tokenizer import (
    WordPieceTokenizer,
)

TOKENIZER_CLASSES = {
    "clip": CLIPTokenizer,
    "wordpiece": WordPieceTokenizer,
    "sentencepiece": SentencePieceTokenizer,
    "word": WordTokenizer,
}
TRAINABLE_KINDS = ("wordpiece", "sentencepiece", "word")


def _tokenizer_class(kind):
    if kind not in TOKENIZER_CLASSES:
        raise ValueError(
            f"Unknown tokenizer kind {kind!r}; choose one of "
            f"{sorted(TOKENIZER_CLASSES)}."
        )
    return TOKENIZER_CLASSES[kind]


def get_tokenizer(kind, **kwargs):
    """Builds a tokenizer of `kind` ("clip", "wordpiece", "sentencepiece",
    "word") from constructor arguments (e.g. `vocabulary=` / `proto=`)."""
    return _tokenizer_class(kind)(**kwargs)


def train_tokenizer(kind, captions, vocabulary_size=32000, **kwargs):
    """Learns a "wordpiece", "sentencepiece" or "word" tokenizer.

    Args:
        kind: the tokenizer kind.
        captions: an iterable of strings or a `tf.data.Dataset` of them.
        vocabulary_size: number of ids, special tokens included.
        **kwargs: passed to the class's `train()` (e.g. `min_count` for
            "word", `model_type` for "sentencepiece").
    """
    if kind not in TRAINABLE_KINDS:
        raise ValueError(
            f"Only {TRAINABLE_KINDS} tokenizers are trained; got {kind!r} "
            f"(the CLIP vocabulary is fixed)."
        )
    return _tokenizer_class(kind).train(
        captions, vocabulary_size=vocabulary_size, **kwargs
    )


def load_tokenizer(preset_or_config):
    """Loads a tokenizer.

    Args:
        preset_or_config: a directory written by `save_to_preset()` (any
            keras-hub preset holding `tokenizer.json`), a tokenizer kind
            ("clip" needs nothing else), or a serialized config dict.
    """
    if isinstance(preset_or_config, dict):
        return keras.saving.deserialize_keras_object(preset_or_config)
    preset = os.fspath(preset_or_config)
    if preset in TOKENIZER_CLASSES and not os.path.isdir(preset):
        return get_tokenizer(preset)
    config_path = os.path.join(preset, TOKENIZER_CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"No tokenizer at {preset!r}: expected a directory holding "
            f"{TOKENIZER_CONFIG_FILE} (written by `save_to_preset()` or "
            f"`keras-superclass vocab`), or one of {sorted(TOKENIZER_CLASSES)}."
        )
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    tokenizer = keras.saving.deserialize_keras_object(config)
    tokenizer.load_assets(os.path.join(preset, TOKENIZER_ASSET_DIR))
    return tokenizer


def tokenizer_kind(tokenizer):
    """The kind name of a tokenizer ("clip", ...), or its class name."""
    return getattr(tokenizer, "kind", type(tokenizer).__name__)
