"""Document frequencies of tokens over a caption corpus (offline IDF).

`df[c]` = number of captions whose token set holds `c` (each token counted
once per caption; special ids get 0). The table feeds
`SuperClassLoss(idf="fixed", document_frequencies=path)`, which reads it
with `keras_superclass.losses.load_document_frequencies`.
"""

import csv
import glob
import json
import os
import sys

import numpy as np
import tensorflow as tf

from keras_superclass.data import python_ops
from keras_superclass.losses import load_document_frequencies

TEXT_EXTENSIONS = (".txt",)
JSONL_EXTENSIONS = (".jsonl", ".json", ".ndjson")
CSV_EXTENSIONS = (".csv", ".tsv")
TFRECORD_EXTENSIONS = (".tfrecord", ".tfrecords", ".tfrec")

__all__ = [
    "CaptionSource",
    "captions_dataset",
    "compute_document_frequencies",
    "iter_captions",
    "load_document_frequencies",
    "save_document_frequencies",
]


def _expand_source(source):
    if isinstance(source, list | tuple):
        files = []
        for item in source:
            files.extend(_expand_source(item))
        return files
    source = os.fspath(source)
    if glob.has_magic(source):
        files = sorted(glob.glob(source))
        if not files:
            raise FileNotFoundError(f"No file matches {source!r}.")
        return files
    if not os.path.exists(source):
        raise FileNotFoundError(f"Caption source {source!r} does not exist.")
    if os.path.isdir(source):
        files = sorted(
            os.path.join(source, name)
            for name in os.listdir(source)
            if _file_format(name) is not None
        )
        if not files:
            raise FileNotFoundError(
                f"{source!r} holds no caption file (.txt, .jsonl, .csv, "
                f".tfrecord)."
            )
        return files
    return [source]


def _file_format(path):
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for fmt, extensions in (
        ("text", TEXT_EXTENSIONS),
        ("jsonl", JSONL_EXTENSIONS),
        ("csv", CSV_EXTENSIONS),
        ("tfrecord", TFRECORD_EXTENSIONS),
    ):
        if name.endswith(extensions):
            return fmt
    return None


class CaptionSource:
    """Iterable over the captions of text, JSONL, CSV or TFRecord files.

    - `.txt`: one caption per line (empty lines kept as empty captions).
    - `.jsonl`/`.json`: one JSON object per line; `caption_column` is read.
    - `.csv`/`.tsv`: a header row naming `caption_column`.
    - `.tfrecord`/`.tfrecords`/`.tfrec` (or any other name): serialized
      `tf.train.Example`s with a bytes feature `caption_column`.
      Records that fail to parse, lack the feature, or sit after a corrupt
      point of a file are skipped and counted in `num_skipped`.
    A `.gz` suffix reads the file compressed.

    Attributes:
        num_read: captions yielded by the last full iteration.
        num_skipped: records skipped by it.
    """

    def __init__(self, source, caption_column="caption"):
        self.files = _expand_source(source)
        self.caption_column = caption_column
        self.num_read = 0
        self.num_skipped = 0

    def __iter__(self):
        self.num_read = 0
        self.num_skipped = 0
        for path in self.files:
            fmt = _file_format(path) or "tfrecord"
            reader = getattr(self, f"_read_{fmt}")
            for caption in reader(path):
                self.num_read += 1
                yield caption

    @property
    def is_tfrecord(self):
        """Whether every file is a TFRecord shard."""
        return all(
            (_file_format(p) or "tfrecord") == "tfrecord" for p in self.files
        )

    def _parse_records(self, records):
        captions, valid = [], []
        column = self.caption_column
        for record in records:
            try:
                example = tf.train.Example.FromString(record)
                values = example.features.feature[column].bytes_list.value
                caption = values[0]
                caption.decode("utf-8")
            except Exception:  # Not an Example, no caption, not UTF-8.
                captions.append(b"")
                valid.append(False)
                continue
            captions.append(caption)
            valid.append(True)
        return np.array(captions, dtype=object), np.array(valid, dtype=bool)

    def tfrecord_batches(self, batch_size=1024):
        """Batches `(captions (B,), valid (B,) bool)` read in the graph.

        Faster than iterating for large shards: records are read and
        batched by tf.data, only the caption is decoded (in one Python
        call per batch). Invalid records have `valid=False`; a corrupt
        file tail is skipped with a logged warning (not counted).
        """

        def read(path):
            compression = tf.where(
                tf.strings.regex_full_match(path, r".*\.gz"), "GZIP", ""
            )
            return tf.data.TFRecordDataset(path, compression).ignore_errors(
                log_warning=True
            )

        def parse(records):
            captions, valid = python_ops.numpy_function(
                self._parse_records,
                [records],
                (tf.string, tf.bool),
                stateful=False,
            )
            return (
                tf.ensure_shape(captions, [None]),
                tf.ensure_shape(valid, [None]),
            )

        files = tf.data.Dataset.from_tensor_slices(self.files)
        records = files.interleave(
            read,
            cycle_length=min(4, len(self.files)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
        return records.batch(batch_size).map(
            parse, num_parallel_calls=tf.data.AUTOTUNE
        )

    def _open_text(self, path):
        if path.endswith(".gz"):
            import gzip

            return gzip.open(path, "rt", encoding="utf-8", newline="")
        return open(path, encoding="utf-8", newline="")

    def _read_text(self, path):
        with self._open_text(path) as f:
            for line in f:
                yield line.rstrip("\r\n")

    def _read_jsonl(self, path):
        with self._open_text(path) as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    caption = json.loads(line)[self.caption_column]
                except (ValueError, KeyError, TypeError):
                    self.num_skipped += 1
                    continue
                if not isinstance(caption, str):
                    self.num_skipped += 1
                    continue
                yield caption

    def _read_csv(self, path):
        delimiter = "\t" if ".tsv" in path.lower() else ","
        with self._open_text(path) as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            if self.caption_column not in (reader.fieldnames or ()):
                raise ValueError(
                    f"{path} has no column {self.caption_column!r} (columns: "
                    f"{reader.fieldnames}); pass the right `caption_column`."
                )
            for row in reader:
                caption = row.get(self.caption_column)
                if caption is None:
                    self.num_skipped += 1
                    continue
                yield caption

    def _read_tfrecord(self, path):
        compression = "GZIP" if path.endswith(".gz") else None
        records = iter(
            tf.data.TFRecordDataset(path, compression).as_numpy_iterator()
        )
        column = self.caption_column
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except tf.errors.OpError as error:
                # A truncated or corrupt file: the rest of it is unreadable.
                print(
                    f"warning: {path}: stopped reading at a corrupt record "
                    f"({type(error).__name__}).",
                    file=sys.stderr,
                )
                self.num_skipped += 1
                return
            try:
                example = tf.train.Example.FromString(record)
                values = example.features.feature[column].bytes_list.value
                caption = values[0].decode("utf-8")
            except Exception:  # Not an Example, no caption, not UTF-8.
                self.num_skipped += 1
                continue
            yield caption


def iter_captions(source, caption_column="caption"):
    """Iterates the captions of a file, a glob, a directory or a list.

    Returns a `CaptionSource` (iterable; after iterating, `num_read` and
    `num_skipped` tell how many captions were read and records skipped).
    See `CaptionSource` for the supported formats.

    Example:
    >>> captions = iter_captions("shards/train-*.tfrecord")  # doctest: +SKIP
    >>> n = sum(1 for _ in captions); captions.num_skipped  # doctest: +SKIP
    """
    return CaptionSource(source, caption_column=caption_column)


def captions_dataset(captions, caption_column="caption"):
    """`tf.data.Dataset` of `tf.string` scalars from any caption source.

    Args:
        captions: a `tf.data.Dataset` of strings (or of dicts holding
            `caption_column`), a path / glob / list of caption files, or an
            iterable of strings.
    """
    if isinstance(captions, tf.data.Dataset):
        spec = captions.element_spec
        if isinstance(spec, dict):
            if caption_column not in spec:
                raise ValueError(
                    f"The dataset's elements have no {caption_column!r} key "
                    f"(keys: {sorted(spec)})."
                )
            captions = captions.map(lambda x: x[caption_column])
            spec = captions.element_spec
        if not (
            isinstance(spec, tf.TensorSpec)
            and spec.dtype == tf.string
            and spec.shape.rank == 0
        ):
            raise ValueError(
                f"Expected a dataset of scalar strings, got elements {spec}."
            )
        return captions
    if isinstance(captions, str | os.PathLike):
        captions = iter_captions(captions, caption_column)
    elif (
        isinstance(captions, list | tuple)
        and captions
        and all(isinstance(c, str) for c in captions)
    ):
        return tf.data.Dataset.from_tensor_slices(
            tf.constant(list(captions), dtype=tf.string)
        )
    source = captions
    return tf.data.Dataset.from_generator(
        lambda: (c if isinstance(c, bytes) else str(c) for c in source),
        output_signature=tf.TensorSpec((), tf.string),
    )


def _batch_counts(ids, vocabulary_size, exclude_ids):
    """`(V,)` int32 documents-per-token count of a `(B, L)` id batch."""
    if isinstance(ids, tf.RaggedTensor):
        ids = ids.to_tensor(default_value=-1)
    ids = tf.cast(ids, tf.int64)
    batch = tf.shape(ids, out_type=tf.int64)[0]
    ids = tf.reshape(ids, [batch, -1])
    rows = tf.broadcast_to(tf.range(batch)[:, tf.newaxis], tf.shape(ids))
    valid = tf.logical_and(ids >= 0, ids < vocabulary_size)
    if exclude_ids:
        excluded = tf.reduce_any(
            tf.equal(
                ids[:, :, tf.newaxis],
                tf.constant(sorted(exclude_ids), tf.int64),
            ),
            axis=-1,
        )
        valid = tf.logical_and(valid, tf.logical_not(excluded))
    keys = tf.boolean_mask(rows * vocabulary_size + ids, valid)
    unique_keys, _ = tf.unique(keys)
    return tf.math.bincount(
        tf.cast(unique_keys % vocabulary_size, tf.int32),
        minlength=vocabulary_size,
        maxlength=vocabulary_size,
        dtype=tf.int64,
    )


def compute_document_frequencies(
    captions,
    tokenizer,
    batch_size=1024,
    show_progress=True,
    caption_column="caption",
):
    """Counts, in one pass, how many captions contain each token.

    Captions are tokenized exactly as for the labels (same tokenizer, same
    truncation); each token counts once per caption; the tokenizer's
    special ids get 0.

    Args:
        captions: an iterable of strings, a `tf.data.Dataset` (of strings or
            of dicts with a "caption"), or a caption file / glob (see
            `iter_captions`).
        tokenizer: a tokenizer from `keras_superclass.data.tokenizers`.
        batch_size: captions tokenized per step.
        show_progress: print a progress bar (tqdm) to stderr.
        caption_column: column / feature holding the caption.

    Returns:
        `(df, num_documents)`: `(V,)` int64 NumPy counts and the number of
        captions.

    Example:
    >>> from keras_superclass.data.tokenizers import get_tokenizer
    >>> df, n = compute_document_frequencies(
    ...     ["a cat", "a cat and a dog"], get_tokenizer("clip"),
    ...     show_progress=False)
    >>> int(df[320]), n
    (2, 2)
    """
    vocabulary_size = int(tokenizer.vocabulary_size())
    exclude_ids = {int(i) for i in tokenizer.special_token_ids}

    def count(texts):
        ids = tokenizer.tokenize(texts)
        return (
            _batch_counts(ids, vocabulary_size, exclude_ids),
            tf.shape(texts, out_type=tf.int64)[0],
            tf.constant(0, tf.int64),
        )

    def count_valid(texts, valid):
        counts, n, _ = count(tf.boolean_mask(texts, valid))
        return counts, n, tf.reduce_sum(tf.cast(~valid, tf.int64))

    if isinstance(captions, CaptionSource) and captions.is_tfrecord:
        dataset = captions.tfrecord_batches(batch_size).map(
            count_valid, num_parallel_calls=tf.data.AUTOTUNE
        )
        captions.num_read = captions.num_skipped = 0
    else:
        dataset = captions_dataset(captions, caption_column)
        dataset = dataset.batch(batch_size).map(
            count, num_parallel_calls=tf.data.AUTOTUNE
        )
    dataset = dataset.prefetch(2)
    df = np.zeros((vocabulary_size,), dtype=np.int64)
    num_documents = 0
    progress = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(unit=" captions", file=sys.stderr)
    for counts, n, skipped in dataset.as_numpy_iterator():
        df += counts
        num_documents += int(n)
        if isinstance(captions, CaptionSource) and captions.is_tfrecord:
            captions.num_read += int(n)
            captions.num_skipped += int(skipped)
        if progress is not None:
            progress.update(int(n))
    if progress is not None:
        progress.close()
    return df, num_documents


def save_document_frequencies(
    path, df, num_documents, tokenizer_kind=None, metadata=None
):
    """Writes a document-frequency table atomically.

    `.npz` stores arrays `df` and `num_documents`; anything else is JSON
    with `num_documents`, `document_frequencies`, `vocabulary_size` and
    `tokenizer_kind` (plus `metadata`). Both load with
    `keras_superclass.losses.load_document_frequencies` and work as
    `SuperClassLoss(idf="fixed", document_frequencies=path)`.
    """
    path = os.fspath(path)
    df = np.asarray(df)
    if df.ndim != 1:
        raise ValueError(f"`df` must be a (V,) vector, got shape {df.shape}.")
    if np.any(df < 0) or np.any(df > num_documents):
        raise ValueError("Document frequencies must lie in [0, num_documents].")
    df = df.astype(np.int64)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        if path.endswith(".npz"):
            with open(tmp, "wb") as f:
                np.savez(f, df=df, num_documents=np.int64(num_documents))
        else:
            table = {
                "num_documents": int(num_documents),
                "vocabulary_size": int(df.shape[0]),
                "tokenizer_kind": tokenizer_kind,
                "document_frequencies": df.tolist(),
            }
            if metadata:
                table["metadata"] = metadata
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(table, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
