"""Document frequencies of tokens over a caption corpus (offline IDF).

`df[c]` = number of captions whose token set holds `c` (each token counted
once per caption; special ids get 0). The table feeds
`SuperClassLoss(idf="fixed", document_frequencies=path)`, which reads it
with `keras_superclass.losses.load_document_frequencies`.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

from keras_superclass.data.captions import CaptionSource
from keras_superclass.data.captions import iter_captions
from keras_superclass.utils.io import atomic_path

__all__ = [
    "CaptionSource",
    "captions_dataset",
    "compute_document_frequencies",
    "iter_captions",
    "load_document_frequencies",  # noqa: F822 (module __getattr__)
    "save_document_frequencies",
]


def __getattr__(name):
    # The table's loader lives with the loss that uses it; it is re-exported
    # here on first use only, so that importing the data package does not
    # import the losses (and with them Keras layers).
    if name == "load_document_frequencies":
        from keras_superclass import losses

        return losses.load_document_frequencies
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    with atomic_path(path) as tmp:
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
    return path
