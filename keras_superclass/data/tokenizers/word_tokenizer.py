"""A lowercase word-level tokenizer (the paper's word-vocabulary ablation).

Not built on `keras.layers.TextVectorization` (Keras 3.15): on jax/torch it
refuses `ragged=True` and a callable `standardize` fails inside `tf.data`,
but this tokenizer returns ragged ids on every backend. Nor is it faster
(batches of 256 in `tf.data`, 2 CPUs: 88-102k captions/s vs 94-123k here).
"""

import collections
import os

import keras
import keras_hub
import tensorflow as tf

from keras_superclass.data.tokenizers.base import as_string_tensor
from keras_superclass.data.tokenizers.base import missing_vocabulary_error

VOCAB_FILENAME = "vocabulary.txt"
PAD_TOKEN = "[PAD]"
OOV_TOKEN = "[UNK]"


def split_words(texts, lowercase=True):
    """Splits `tf.string` captions into words (a ragged last axis).

    Words are runs of letters and digits; apostrophes inside a word are
    dropped ("don't" -> "dont"), every other character separates words.
    """
    texts = as_string_tensor(texts)
    if lowercase:
        texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, r"([\p{L}\p{N}])['’]+", r"\1")
    texts = tf.strings.regex_replace(texts, r"[^\p{L}\p{N}]+", " ")
    return tf.strings.split(texts)


@keras.saving.register_keras_serializable(package="keras_superclass")
class WordTokenizer(keras_hub.tokenizers.Tokenizer):
    """Maps each lowercase word of a caption to its vocabulary id.

    Id 0 is the padding token `[PAD]` and id 1 the out-of-vocabulary token
    `[UNK]`; both are `special_token_ids`. Runs with TensorFlow ops (a
    static hash table), so it works inside `tf.data` on every backend.

    Args:
        vocabulary: list of words or a file with one word per line; it must
            start with `[PAD]` and `[UNK]` (see `WordTokenizer.train`).
        sequence_length: pad/truncate to this length, or `None` (ragged).
        lowercase: lowercase the captions first.

    Example:
    >>> tok = WordTokenizer(["[PAD]", "[UNK]", "a", "cat"])
    >>> [int(i) for i in tok.tokenize("A cat, a dog")]
    [2, 3, 2, 1]
    """

    kind = "word"

    def __init__(
        self,
        vocabulary=None,
        sequence_length=None,
        lowercase=True,
        dtype="int32",
        **kwargs,
    ):
        super().__init__(dtype=dtype, **kwargs)
        self.sequence_length = sequence_length
        self.lowercase = lowercase
        self.file_assets = [VOCAB_FILENAME]
        self.set_vocabulary(vocabulary)

    @classmethod
    def train(
        cls, captions, vocabulary_size=40000, min_count=1, batch_size=1024
    ):
        """Builds the vocabulary from captions (an iterable or a dataset).

        Keeps the `vocabulary_size - 2` most frequent words seen at least
        `min_count` times (ties by word), after `[PAD]` and `[UNK]`.
        """
        from keras_superclass.data.document_frequency import captions_dataset

        counts = collections.Counter()
        dataset = captions_dataset(captions).batch(batch_size)
        dataset = dataset.map(
            lambda x: split_words(x).flat_values,
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        for words in dataset.as_numpy_iterator():
            counts.update(words.tolist())
        words = [w for w, c in counts.items() if c >= max(1, min_count)]
        words.sort(key=lambda w: (-counts[w], w))
        words = [w.decode("utf-8") for w in words]
        words = [w for w in words if w not in (PAD_TOKEN, OOV_TOKEN)]
        vocabulary = [PAD_TOKEN, OOV_TOKEN] + words[: vocabulary_size - 2]
        return cls(vocabulary=vocabulary)

    def set_vocabulary(self, vocabulary):
        """Sets the vocabulary: a list of words or a one-word-a-line file."""
        if vocabulary is None:
            self.vocabulary = None
            self._table = None
            return
        if isinstance(vocabulary, str | os.PathLike):
            with open(vocabulary, encoding="utf-8") as f:
                vocabulary = [line.rstrip("\n") for line in f]
            while vocabulary and vocabulary[-1] == "":
                vocabulary.pop()
        vocabulary = [str(w) for w in vocabulary]
        if vocabulary[:2] != [PAD_TOKEN, OOV_TOKEN]:
            raise ValueError(
                f"A word vocabulary must start with {PAD_TOKEN!r} and "
                f"{OOV_TOKEN!r} (ids 0 and 1); got {vocabulary[:2]}. Build it "
                f"with `WordTokenizer.train()`."
            )
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("The word vocabulary has duplicate entries.")
        self.vocabulary = vocabulary
        self._token_to_id = {w: i for i, w in enumerate(vocabulary)}
        with tf.init_scope():
            keys = tf.constant(vocabulary, dtype=tf.string)
            initializer = tf.lookup.KeyValueTensorInitializer(
                keys,
                tf.range(len(vocabulary), dtype=tf.int32),
            )
            self._table = tf.lookup.StaticHashTable(initializer, 1)
            self._vocabulary_tensor = keys

    def _check_vocabulary(self):
        if self.vocabulary is None:
            raise missing_vocabulary_error(self, "vocabulary")

    def get_vocabulary(self):
        self._check_vocabulary()
        return list(self.vocabulary)

    def vocabulary_size(self):
        self._check_vocabulary()
        return len(self.vocabulary)

    def id_to_token(self, id):
        self._check_vocabulary()
        id = int(id)
        if not 0 <= id < len(self.vocabulary):
            raise ValueError(
                f"`id` must be in [0, {len(self.vocabulary) - 1}], got {id}."
            )
        return self.vocabulary[id]

    def token_to_id(self, token):
        self._check_vocabulary()
        if token not in self._token_to_id:
            raise ValueError(f"Token {token!r} is not in the vocabulary.")
        return self._token_to_id[token]

    @property
    def pad_token_id(self):
        return 0

    @property
    def oov_token_id(self):
        return 1

    @property
    def special_tokens(self):
        return [PAD_TOKEN, OOV_TOKEN]

    @property
    def special_token_ids(self):
        """`[PAD]` (0) and `[UNK]` (1): never labels."""
        return [0, 1]

    def tokenize(self, inputs):
        """Word ids: `(n,)` for a caption, ragged `(B, None)` for a batch
        (or `(..., sequence_length)` padded with 0 when it is set)."""
        self._check_vocabulary()
        inputs = as_string_tensor(inputs)
        words = split_words(inputs, self.lowercase)
        if isinstance(words, tf.RaggedTensor):
            ids = tf.ragged.map_flat_values(self._table.lookup, words)
        else:
            ids = self._table.lookup(words)
        if self.sequence_length:
            if isinstance(ids, tf.RaggedTensor):
                shape = ids.shape.as_list()
                shape[-1] = self.sequence_length
                return ids.to_tensor(default_value=0, shape=shape)
            ids = ids[: self.sequence_length]
            pad = self.sequence_length - tf.shape(ids)[0]
            return tf.ensure_shape(
                tf.pad(ids, [[0, pad]]), [self.sequence_length]
            )
        return ids

    def detokenize(self, inputs):
        """Space-joined words of ids (padding dropped)."""
        self._check_vocabulary()
        if not isinstance(inputs, tf.RaggedTensor):
            inputs = tf.convert_to_tensor(inputs)
        inputs = tf.ragged.boolean_mask(inputs, inputs != 0)
        words = tf.gather(self._vocabulary_tensor, inputs)
        return tf.strings.reduce_join(words, axis=-1, separator=" ")

    def compute_output_spec(self, input_spec):
        return keras.KerasTensor(
            input_spec.shape + (self.sequence_length,), dtype=self.compute_dtype
        )

    def save_assets(self, dir_path):
        self._check_vocabulary()
        path = os.path.join(dir_path, VOCAB_FILENAME)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(w + "\n" for w in self.vocabulary)
        os.replace(tmp, path)

    def load_assets(self, dir_path):
        self.set_vocabulary(os.path.join(dir_path, VOCAB_FILENAME))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary": None,  # Saved as a preset asset.
                "sequence_length": self.sequence_length,
                "lowercase": self.lowercase,
            }
        )
        return config
