"""Caption -> label: the SET of a caption's token ids, padded.

The label of a caption is the set of its tokens (duplicates collapse, no
term frequency), minus special tokens (SOT/EOT/pad/unk), as padded ids
`(max_labels,)` with pad value -1 - the format the losses turn into a
multi-hot on the device.
"""

import numpy as np
import tensorflow as tf


def _first_occurrence_mask(ids, exclude_ids, pad_id):
    """`(B, L)` bool: first occurrence of each id in its row, not excluded."""
    length = tf.shape(ids)[1]
    same = tf.equal(ids[:, :, tf.newaxis], ids[:, tf.newaxis, :])
    # earlier[j, k] = k < j
    earlier = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
    earlier = tf.logical_and(earlier, tf.logical_not(tf.eye(length) > 0))
    seen_before = tf.reduce_any(tf.logical_and(same, earlier), axis=-1)
    keep = tf.logical_and(tf.logical_not(seen_before), ids >= 0)
    keep = tf.logical_and(keep, ids != pad_id)
    exclude = sorted({int(i) for i in exclude_ids})
    if exclude:
        excluded = tf.reduce_any(
            tf.equal(ids[:, :, tf.newaxis], tf.constant(exclude, tf.int32)),
            axis=-1,
        )
        keep = tf.logical_and(keep, tf.logical_not(excluded))
    return keep


def _dense_ids(ids, pad_id):
    if isinstance(ids, tf.RaggedTensor):
        return tf.cast(ids, tf.int32).to_tensor(default_value=min(pad_id, -1))
    return tf.cast(tf.convert_to_tensor(ids), tf.int32)


def caption_token_sets(
    ids, max_labels=64, pad_id=-1, exclude_ids=(), return_truncated=False
):
    """Batched `caption_token_set`: `(B, L)` (or ragged) ids -> `(B, M)`.

    Returns:
        `(B, max_labels)` int32, and with `return_truncated=True` also the
        `(B,)` int32 number of distinct ids dropped per row.
    """
    ids = _dense_ids(ids, pad_id)
    keep = _first_occurrence_mask(ids, exclude_ids, pad_id)
    # Position of each kept id in its row's label list.
    slot = tf.cumsum(tf.cast(keep, tf.int32), axis=1, exclusive=True)
    keep_slot = tf.logical_and(keep, slot < max_labels)
    rows = tf.broadcast_to(
        tf.range(tf.shape(ids)[0])[:, tf.newaxis], tf.shape(ids)
    )
    indices = tf.stack(
        [tf.boolean_mask(rows, keep_slot), tf.boolean_mask(slot, keep_slot)],
        axis=-1,
    )
    labels = tf.tensor_scatter_nd_update(
        tf.fill([tf.shape(ids)[0], max_labels], tf.constant(pad_id, tf.int32)),
        indices,
        tf.boolean_mask(ids, keep_slot),
    )
    if return_truncated:
        count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
        return labels, tf.maximum(count - max_labels, 0)
    return labels


def caption_token_set(
    ids, max_labels=64, pad_id=-1, exclude_ids=(), return_truncated=False
):
    """The set of token ids of one caption, padded to `max_labels`.

    Ids keep the order of their first appearance; ids in `exclude_ids`,
    negative ids and `pad_id` are dropped; a set larger than `max_labels`
    is truncated. Works eagerly and inside a `tf.data` map.

    Args:
        ids: `(L,)` int token ids of one caption.
        max_labels: length of the output.
        pad_id: padding value of the output.
        exclude_ids: ids never used as labels (the tokenizer's
            `special_token_ids`).
        return_truncated: also return how many distinct ids were dropped.

    Returns:
        `(max_labels,)` int32 tensor (and the int32 count dropped).

    Example:
    >>> caption_token_set([49406, 320, 2368, 320, 49407, 0], 4,
    ...                   exclude_ids=(0, 49406, 49407)).numpy().tolist()
    [320, 2368, -1, -1]
    """
    ids = tf.reshape(_dense_ids(ids, pad_id), [1, -1])
    labels, dropped = caption_token_sets(
        ids, max_labels, pad_id, exclude_ids, return_truncated=True
    )
    labels = tf.ensure_shape(labels[0], [max_labels])
    if return_truncated:
        return labels, dropped[0]
    return labels


def make_label_fn(tokenizer, max_labels=64, pad_id=-1):
    """Returns `fn(caption) -> labels` for a `tf.data` map.

    `fn` takes a `tf.string` scalar (-> `(max_labels,)` int32) or a `(B,)`
    batch (-> `(B, max_labels)`; tokenizing after `batch()` is faster).
    Special ids of the tokenizer are excluded.

    Example:
    >>> from keras_superclass.data.tokenizers import get_tokenizer
    >>> fn = make_label_fn(get_tokenizer("clip"), max_labels=4)
    >>> fn(tf.constant("a cat, a cat")).numpy().tolist()
    [320, 2368, 267, -1]
    """
    exclude_ids = tuple(int(i) for i in tokenizer.special_token_ids)

    def label_fn(caption):
        caption = tf.convert_to_tensor(caption, dtype=tf.string)
        ids = tokenizer.tokenize(caption)
        if not isinstance(ids, tf.Tensor | tf.RaggedTensor):
            # keras-hub tokenizers run pure Python when called eagerly.
            if caption.shape.rank == 0:
                ids = tf.constant(np.asarray(ids, np.int32).reshape(-1))
            else:
                rows = [np.asarray(r, np.int32).tolist() for r in ids]
                ids = tf.ragged.constant(rows, dtype=tf.int32)
        if caption.shape.rank == 0:
            return caption_token_set(ids, max_labels, pad_id, exclude_ids)
        labels = caption_token_sets(ids, max_labels, pad_id, exclude_ids)
        return tf.ensure_shape(labels, [None, max_labels])

    label_fn.batched = True  # Readers call it once per batch of captions.
    return label_fn


def token_sequences(ids, sequence_length, pad_id=0):
    """`(B, L)` (or ragged) ids -> `(B, sequence_length)` int32, truncated
    or padded with `pad_id` (a text tower's input, unlike the label sets).

    Example:
    >>> token_sequences(tf.ragged.constant([[5, 6, 7], [8]]), 2).numpy()
    array([[5, 6],
           [8, 0]], dtype=int32)
    """
    if isinstance(ids, tf.RaggedTensor):
        ids = tf.cast(ids, tf.int32)[:, :sequence_length]
        return ids.to_tensor(
            default_value=pad_id, shape=[None, sequence_length]
        )
    ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)[:, :sequence_length]
    pad = sequence_length - tf.shape(ids)[1]
    ids = tf.pad(ids, [[0, 0], [0, pad]], constant_values=pad_id)
    return tf.ensure_shape(ids, [None, sequence_length])


def make_sequence_fn(tokenizer, sequence_length=77, pad_id=0):
    """Returns `fn(captions) -> (B, sequence_length)` token ids for a text
    tower: the tokenizer's ids in order (CLIP BPE: `[SOT] ids [EOT]`, EOT
    kept when truncating), padded with `pad_id`.

    Like `make_label_fn`, `fn` takes a `(B,)` batch (or one caption) and
    runs inside `tf.data` on every backend.

    Example:
    >>> from keras_superclass.data.tokenizers import get_tokenizer
    >>> tokenizer = get_tokenizer("clip", sequence_length=5)
    >>> fn = make_sequence_fn(tokenizer, sequence_length=5)
    >>> fn(tf.constant(["a cat"])).numpy().tolist()
    [[49406, 320, 2368, 49407, 0]]
    """
    native = getattr(tokenizer, "sequence_length", None)
    if native and native != sequence_length:
        raise ValueError(
            f"The tokenizer pads to {native} ids but the text tower takes "
            f"{sequence_length}: build the tokenizer with "
            f"sequence_length={sequence_length} (a CLIP tokenizer then keeps "
            f"its end token when truncating)."
        )

    def sequence_fn(captions):
        captions = tf.convert_to_tensor(captions, dtype=tf.string)
        single = captions.shape.rank == 0
        if single:
            captions = captions[None]
        ids = tokenizer.tokenize(captions)
        if not isinstance(ids, tf.Tensor | tf.RaggedTensor):
            # keras-hub tokenizers run pure Python when called eagerly.
            rows = [np.asarray(r, np.int32).reshape(-1).tolist() for r in ids]
            ids = tf.ragged.constant(rows, dtype=tf.int32)
        ids = token_sequences(ids, sequence_length, pad_id)
        return ids[0] if single else ids

    sequence_fn.batched = True  # Readers call it once per batch.
    return sequence_fn
