"""The OpenAI CLIP byte-pair tokenizer, id for id equal to OpenCLIP's.

Design: the caption cleaning of the reference (`ftfy.fix_text`) has no
TensorFlow equivalent, so the whole tokenizer (cleaning, CLIP's split regex,
byte-level BPE) runs as one Python function inside the graph through
`tf.numpy_function`, with an LRU cache from pre-token to ids. The cached hot
path is a dictionary lookup per word, and printable-ASCII captions without
`&` skip `ftfy`/`html` (both leave such text unchanged), so the per-caption
cost is a few tens of microseconds. Batched input is tokenized in one Python
call, which amortises the graph-to-Python hop.
"""

import atexit
import contextlib
import functools
import gzip
import html
import importlib.resources
import os
import shutil

import keras
import keras_hub
import numpy as np
import regex
import tensorflow as tf

from keras_superclass.data import python_ops
from keras_superclass.data.tokenizers.base import as_string_tensor

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
CONTEXT_LENGTH = 77
# 256 bytes + 256 `</w>` bytes + merges + 2 specials = 49,408 ids.
NUM_MERGES = 49152 - 256 - 2
VOCABULARY_SIZE = 49408


@functools.lru_cache(maxsize=1)
def default_bpe_path():
    """Path of the BPE vocabulary shipped in this package's `assets/`.

    The file is OpenAI CLIP's (MIT licence, see the LICENSE file next to
    it), byte for byte the copy OpenCLIP ships.
    """
    resource = importlib.resources.files(__package__).joinpath(
        "assets", BPE_FILENAME
    )
    if not resource.is_file():
        raise FileNotFoundError(
            f"The packaged CLIP BPE vocabulary ({BPE_FILENAME}) is missing "
            f"from this keras-superclass install: reinstall the package, or "
            f"pass `vocabulary=PATH_TO/{BPE_FILENAME}`."
        )
    if isinstance(resource, os.PathLike):
        return os.fspath(resource)
    # A zipped install: extract once, removed at interpreter exit.
    stack = contextlib.ExitStack()
    atexit.register(stack.close)
    return os.fspath(stack.enter_context(importlib.resources.as_file(resource)))


@functools.lru_cache
def bytes_to_unicode():
    """CLIP's reversible map from the 256 bytes to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(c) for c in codes]))


def clean_caption(text):
    """The reference cleaning: ftfy, HTML unescape twice, whitespace, lower.

    Printable-ASCII text without `&` is left unchanged by `ftfy.fix_text`
    and `html.unescape` (no entity, mojibake, control or width character
    can occur in it), so it skips them.
    """
    if not (text.isascii() and text.isprintable() and "&" not in text):
        import ftfy

        text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text))
    return " ".join(text.split()).lower()


class ClipBPE:
    """Pure-Python CLIP BPE (the engine behind `CLIPTokenizer`).

    Args:
        path: the `bpe_simple_vocab_16e6.txt.gz` merges file (or the
            uncompressed text).
        cache_size: entries of the pre-token -> ids LRU cache.
    """

    def __init__(self, path, cache_size=262144):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            lines = f.read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(
                f"{path} is not CLIP's BPE merges file: expected "
                f"{NUM_MERGES} merge lines after a header line."
            )
        byte_encoder = bytes_to_unicode()
        vocabulary = list(byte_encoder.values())
        vocabulary += [v + "</w>" for v in vocabulary]
        vocabulary += ["".join(m) for m in merges]
        vocabulary += [START_OF_TEXT, END_OF_TEXT]
        self.vocabulary = vocabulary
        self.encoder = {t: i for i, t in enumerate(vocabulary)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = byte_encoder
        self.byte_decoder = {v: k for k, v in byte_encoder.items()}
        self.sot_id = self.encoder[START_OF_TEXT]
        self.eot_id = self.encoder[END_OF_TEXT]
        self.pattern = regex.compile(
            START_OF_TEXT
            + "|"
            + END_OF_TEXT
            + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self._specials = {
            START_OF_TEXT: (self.sot_id,),
            END_OF_TEXT: (self.eot_id,),
        }
        self.pretoken_ids = functools.lru_cache(maxsize=cache_size)(
            self._pretoken_ids
        )

    def _bpe(self, word):
        """Merges the symbols of one byte-encoded word, lowest rank first."""
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        ranks = self.bpe_ranks
        while len(symbols) > 1:
            best, best_rank = None, None
            for pair in zip(symbols, symbols[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            first, second = best
            merged = []
            i = 0
            while i < len(symbols):
                if (
                    i < len(symbols) - 1
                    and symbols[i] == first
                    and symbols[i + 1] == second
                ):
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def _pretoken_ids(self, token):
        special = self._specials.get(token)
        if special is not None:
            return special
        word = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
        return tuple(self.encoder[s] for s in self._bpe(word))

    def encode(self, text):
        """BPE ids of a caption, without SOT/EOT."""
        ids = []
        pretoken_ids = self.pretoken_ids
        for token in self.pattern.findall(clean_caption(text)):
            ids.extend(pretoken_ids(token))
        return ids

    def encode_sequence(self, text, context_length):
        """`[SOT] + ids + [EOT]`, truncated with EOT kept last if needed."""
        ids = [self.sot_id, *self.encode(text), self.eot_id]
        if context_length and len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = self.eot_id
        return ids

    def token_text(self, id):
        """One token as text: its UTF-8 bytes decoded, without `</w>`; a
        token holding part of a character stays its BPE symbol."""
        symbol = self.vocabulary[id].replace("</w>", "")
        try:
            return bytes(self.byte_decoder[c] for c in symbol).decode("utf-8")
        except UnicodeDecodeError:
            return symbol

    def decode(self, ids):
        """Text of BPE ids (`</w>` becomes a space), like the reference."""
        text = "".join(self.vocabulary[i] for i in ids)
        data = bytearray(self.byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")


def _as_text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@keras.saving.register_keras_serializable(package="keras_superclass")
class CLIPTokenizer(keras_hub.tokenizers.Tokenizer):
    """OpenAI CLIP BPE tokenizer, identical to `open_clip.tokenize`.

    Cleans each caption like the reference (`ftfy.fix_text`, HTML unescape
    twice, whitespace collapse, lowercase), splits it with CLIP's regex,
    applies byte-level BPE and returns `[SOT] + ids + [EOT]` padded with 0
    to `sequence_length` (77); longer captions are truncated with EOT kept
    in the last slot. Works eagerly and inside `tf.data` on every backend.

    The vocabulary file ships with this package (OpenAI's MIT-licensed
    `bpe_simple_vocab_16e6.txt.gz`); `vocabulary=PATH` reads another copy,
    and `save_to_preset()` copies the file into the preset's assets.

    Note: id 0 is both the padding value and the BPE token "!" (a quirk of
    the reference); `special_token_ids` lists 0 with SOT and EOT so labels
    never contain it. Captions are decoded from UTF-8 with invalid bytes
    replaced by U+FFFD.

    Args:
        vocabulary: path of `bpe_simple_vocab_16e6.txt.gz`; `None` uses the
            copy shipped with this package.
        sequence_length: output length, or `None` for unpadded (ragged) ids.
        cache_size: size of the pre-token cache.

    Example:
    >>> tokenizer = CLIPTokenizer()
    >>> ids = tokenizer.tokenize("A photo of a cat.")
    >>> [int(i) for i in ids[:7]]
    [49406, 320, 1125, 539, 320, 2368, 269]
    """

    kind = "clip"

    def __init__(
        self,
        vocabulary=None,
        sequence_length=CONTEXT_LENGTH,
        cache_size=262144,
        dtype="int32",
        **kwargs,
    ):
        super().__init__(dtype=dtype, **kwargs)
        if vocabulary is not None:
            vocabulary = os.fspath(vocabulary)
        self.vocabulary_path = vocabulary
        self.sequence_length = sequence_length
        self.cache_size = cache_size
        self.sot_token_id = VOCABULARY_SIZE - 2
        self.eot_token_id = VOCABULARY_SIZE - 1
        self.pad_token_id = 0
        self._bpe = None
        self.file_assets = [BPE_FILENAME]

    # Vocabulary ---------------------------------------------------------

    @property
    def bpe(self):
        """The Python BPE engine (loads the vocabulary on first use)."""
        if self._bpe is None:
            path = self.vocabulary_path or default_bpe_path()
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"CLIP BPE vocabulary {path!r} does not exist. Pass the "
                    f"path of {BPE_FILENAME} as `vocabulary`."
                )
            self._bpe = ClipBPE(path, cache_size=self.cache_size)
            self._resolved_path = path
        return self._bpe

    def set_vocabulary(self, path):
        """Uses the BPE merges file at `path`."""
        self.vocabulary_path = os.fspath(path)
        self._bpe = None
        self.bpe  # noqa: B018 - load now to fail early.

    def get_vocabulary(self):
        return list(self.bpe.vocabulary)

    def vocabulary_size(self):
        return VOCABULARY_SIZE

    def id_to_token(self, id):
        id = int(id)
        if not 0 <= id < VOCABULARY_SIZE:
            raise ValueError(
                f"`id` must be in [0, {VOCABULARY_SIZE - 1}], got {id}."
            )
        return self.bpe.vocabulary[id]

    def token_text(self, id):
        """The readable text of token `id` (`"―"`, where `id_to_token`
        gives the byte-level symbol `"âĢķ"`), without the `</w>` mark."""
        self.id_to_token(id)  # checks the range
        return self.bpe.token_text(int(id))

    def token_to_id(self, token):
        if token not in self.bpe.encoder:
            raise ValueError(f"Token {token!r} is not in the vocabulary.")
        return self.bpe.encoder[token]

    @property
    def special_token_ids(self):
        """Ids that never become labels: SOT, EOT and the pad id 0."""
        return [self.sot_token_id, self.eot_token_id, self.pad_token_id]

    @property
    def special_tokens(self):
        return [START_OF_TEXT, END_OF_TEXT]

    # Python paths ---------------------------------------------------------

    def encode(self, text):
        """Ids of one caption as a Python list (with SOT/EOT, unpadded)."""
        return self.bpe.encode_sequence(_as_text(text), self.sequence_length)

    def _np_padded(self, texts):
        length = self.sequence_length
        out = np.zeros((len(texts), length), dtype=np.int32)
        encode = self.bpe.encode_sequence
        for row, text in enumerate(texts):
            ids = encode(_as_text(text), length)
            out[row, : len(ids)] = ids
        return out

    def _np_ragged(self, texts):
        encode = self.bpe.encode_sequence
        rows = [encode(_as_text(text), None) for text in texts]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        values = np.fromiter(
            (i for r in rows for i in r), dtype=np.int32, count=lengths.sum()
        )
        return values, lengths

    # Graph paths ----------------------------------------------------------

    def tokenize(self, inputs):
        """Token ids: `(L,)` for a caption, `(B, L)` for a batch.

        With `sequence_length=None` a batch gives a `tf.RaggedTensor`.
        """
        inputs = as_string_tensor(inputs)
        if isinstance(inputs, tf.RaggedTensor):
            return tf.ragged.map_flat_values(self.tokenize, inputs)
        self.bpe  # noqa: B018 - load outside the graph function.
        rank = inputs.shape.rank
        flat = tf.reshape(inputs, [-1])
        if self.sequence_length:
            ids = python_ops.numpy_function(
                self._np_padded, [flat], tf.int32, stateful=False
            )
            ids = tf.ensure_shape(ids, [None, self.sequence_length])
            if rank == 0:
                return ids[0]
            outer = tf.shape(inputs)
            return tf.reshape(
                ids, tf.concat([outer, [self.sequence_length]], axis=0)
            )
        values, lengths = python_ops.numpy_function(
            self._np_ragged, [flat], (tf.int32, tf.int64), stateful=False
        )
        values = tf.ensure_shape(values, [None])
        lengths = tf.ensure_shape(lengths, [None])
        ragged = tf.RaggedTensor.from_row_lengths(values, lengths)
        if rank == 0:
            return ragged[0]
        if rank != 1:
            raise ValueError(
                "Unpadded tokenization takes a caption or a (B,) batch."
            )
        return ragged

    def _np_detokenize(self, ids, lengths):
        out = []
        start = 0
        bpe = self.bpe
        for length in lengths:
            row = [int(i) for i in ids[start : start + length]]
            start += length
            if self.eot_token_id in row:
                row = row[: row.index(self.eot_token_id)]
            row = [i for i in row if i != self.sot_token_id]
            out.append(bpe.decode(row).strip())
        return np.array(out, dtype=object)

    def detokenize(self, inputs):
        """Text of ids (stops at EOT; SOT and padding are dropped)."""
        if not isinstance(inputs, tf.RaggedTensor):
            inputs = tf.convert_to_tensor(inputs)
        rank = inputs.shape.rank
        if rank == 1 and not isinstance(inputs, tf.RaggedTensor):
            inputs = tf.RaggedTensor.from_tensor(inputs[tf.newaxis])
        elif not isinstance(inputs, tf.RaggedTensor):
            inputs = tf.RaggedTensor.from_tensor(inputs)
        self.bpe  # noqa: B018
        text = python_ops.numpy_function(
            self._np_detokenize,
            [tf.cast(inputs.flat_values, tf.int32), inputs.row_lengths()],
            tf.string,
            stateful=False,
        )
        text = tf.ensure_shape(text, [None])
        return text[0] if rank == 1 else text

    def compute_output_spec(self, input_spec):
        return keras.KerasTensor(
            input_spec.shape + (self.sequence_length,), dtype=self.compute_dtype
        )

    # Saving ---------------------------------------------------------------

    def save_assets(self, dir_path):
        self.bpe  # noqa: B018
        target = os.path.join(dir_path, BPE_FILENAME)
        source = self._resolved_path
        if os.path.abspath(source) == os.path.abspath(target):
            return
        if not source.endswith(".gz"):
            with open(source, "rb") as f:
                data = f.read()
            tmp = target + ".tmp"
            with gzip.open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
            return
        tmp = target + ".tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)

    def load_assets(self, dir_path):
        self.set_vocabulary(os.path.join(dir_path, BPE_FILENAME))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                # `save_to_preset()` also copies the file into the assets.
                "vocabulary": self.vocabulary_path,
                "sequence_length": self.sequence_length,
                "cache_size": self.cache_size,
            }
        )
        return config
