"""Label helpers shared by every multi-label loss and metric."""

import numpy as np
from keras import ops


def _concrete_numpy(x):
    """`x` as NumPy when its values are known on the host, else `None`."""
    if isinstance(x, np.ndarray | list | tuple):
        return np.asarray(x)
    try:
        device = str(getattr(x, "device", "cpu")).lower()
    except Exception:  # A tracer.
        return None
    if "cpu" not in device:
        return None  # On an accelerator: reading it would sync every step.
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except Exception:  # A tracer or symbolic graph tensor.
        return None


def check_token_ids(token_ids, vocabulary_size, pad_id=-1):
    """Raises if concrete `token_ids` hold an id outside `[0, V)` or pad."""
    values = _concrete_numpy(token_ids)
    if values is None:
        return
    values = values.astype(np.int64)
    bad = (values != pad_id) & ((values < 0) | (values >= vocabulary_size))
    if bad.any():
        raise ValueError(
            f"Label token ids must lie in [0, {vocabulary_size}) or equal the "
            f"pad value {pad_id}; found {sorted(set(values[bad].tolist()))[:8]}"
            f". Check that the tokenizer's vocabulary matches the model's "
            f"head (`vocabulary_size={vocabulary_size}`)."
        )


def token_ids_to_multi_hot(
    token_ids, vocabulary_size, pad_id=-1, ignore_ids=None, dtype="float32"
):
    """Builds the multi-hot `(B, V)` label of padded token ids `(B, L)`.

    Duplicates collapse (a caption's label is the SET of its tokens); pad
    entries and `ignore_ids` never become targets. Built with one scatter
    update, so memory is `B * V`, not `B * L * V`.

    Ids out of range raise when the values are concrete (eager); inside a
    compiled step they cannot raise, so they are dropped from the multi-hot
    and `invalid_id_mask` lets the caller flag those samples.

    Args:
        token_ids: int tensor `(B, L)` (floats holding ints are accepted).
        vocabulary_size: `V`.
        pad_id: value of padding entries.
        ignore_ids: ids that never become targets (e.g. special tokens).
        dtype: dtype of the result.

    Returns:
        `(B, V)` tensor of 0/1.
    """
    check_token_ids(token_ids, vocabulary_size, pad_id)
    ids = ops.cast(token_ids, "int32")
    shape = ops.shape(ids)
    batch, length = shape[0], shape[1]
    # Pad and out-of-range entries go to a spare column V, cut off below,
    # so every write stores 1: duplicates agree and the result is exact.
    valid = ops.logical_and(ids >= 0, ids < vocabulary_size)
    columns = ops.where(valid, ids, vocabulary_size)
    rows = ops.broadcast_to(
        ops.expand_dims(ops.arange(batch, dtype="int32"), 1), (batch, length)
    )
    indices = ops.reshape(ops.stack([rows, columns], axis=-1), (-1, 2))
    # `scatter_update`, not `scatter`: Keras's torch `scatter` loops over
    # the indices in Python (one device sync each on a GPU).
    multi_hot = ops.scatter_update(
        ops.zeros((batch, vocabulary_size + 1), dtype),
        indices,
        ops.ones((batch * length,), dtype),
    )[:, :vocabulary_size]
    if ignore_ids:
        keep = np.ones((vocabulary_size,), dtype="float32")
        keep[np.asarray(list(ignore_ids), dtype=np.int64)] = 0.0
        multi_hot = multi_hot * ops.cast(keep, dtype)
    return multi_hot


def invalid_id_mask(token_ids, vocabulary_size, pad_id=-1):
    """`(B,)` bool: samples holding an id that is neither valid nor pad."""
    ids = ops.cast(token_ids, "int32")
    out_of_range = ops.logical_or(ids < 0, ids >= vocabulary_size)
    bad = ops.logical_and(out_of_range, ids != pad_id)
    return ops.any(bad, axis=-1)


def labels_to_multi_hot(
    y_true, vocabulary_size, pad_id=-1, ignore_ids=None, label_format="auto"
):
    """Multi-hot `(B, V)` float32 from ids `(B, L)` or a multi-hot.

    Returns `(multi_hot, invalid)` where `invalid` is a `(B,)` bool mask of
    samples with out-of-range ids (all False for multi-hot input).
    """
    width = y_true.shape[-1]
    if label_format == "auto":
        label_format = "multi_hot" if width == vocabulary_size else "ids"
    if label_format == "multi_hot":
        if width is not None and width != vocabulary_size:
            raise ValueError(
                f"Multi-hot labels have {width} classes but the model's head "
                f"has {vocabulary_size}. Build the head with the tokenizer's "
                f"vocabulary size."
            )
        multi_hot = ops.cast(y_true, "float32")
        if ignore_ids:
            keep = np.ones((vocabulary_size,), dtype="float32")
            keep[np.asarray(list(ignore_ids), dtype=np.int64)] = 0.0
            multi_hot = multi_hot * keep
        invalid = ops.zeros((ops.shape(y_true)[0],), dtype="bool")
        return multi_hot, invalid
    if label_format != "ids":
        raise ValueError(
            f"`label_format` must be 'auto', 'ids' or 'multi_hot', got "
            f"{label_format!r}."
        )
    multi_hot = token_ids_to_multi_hot(
        y_true, vocabulary_size, pad_id=pad_id, ignore_ids=ignore_ids
    )
    return multi_hot, invalid_id_mask(y_true, vocabulary_size, pad_id)
