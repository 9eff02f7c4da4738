"""Top-k precision and recall of predicted tokens against the caption's."""

import keras
from keras import ops

from keras_superclass.losses.labels import labels_to_multi_hot


def _top_k_hits(y_true, y_pred, k, vocabulary_size, pad_id, ignore_ids):
    multi_hot, _ = labels_to_multi_hot(
        y_true, vocabulary_size, pad_id=pad_id, ignore_ids=ignore_ids
    )
    _, top_ids = ops.top_k(ops.cast(y_pred, "float32"), k)
    hits = ops.sum(ops.take_along_axis(multi_hot, top_ids, axis=1), axis=1)
    return hits, ops.sum(multi_hot, axis=1)


class _TokenTopKMetric(keras.metrics.Mean):
    def __init__(
        self,
        k=5,
        vocabulary_size=None,
        pad_id=-1,
        ignore_ids=None,
        name=None,
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        self.k = int(k)
        self.vocabulary_size = vocabulary_size
        self.pad_id = pad_id
        self.ignore_ids = list(ignore_ids or [])

    def _per_sample(self, hits, num_labels):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        vocabulary_size = self.vocabulary_size or y_pred.shape[-1]
        hits, num_labels = _top_k_hits(
            y_true,
            y_pred,
            self.k,
            vocabulary_size,
            self.pad_id,
            self.ignore_ids,
        )
        return super().update_state(
            self._per_sample(hits, num_labels), sample_weight=sample_weight
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            k=self.k,
            vocabulary_size=self.vocabulary_size,
            pad_id=self.pad_id,
            ignore_ids=self.ignore_ids,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_superclass")
class TokenTopKPrecision(_TokenTopKMetric):
    """Fraction of the k highest-scoring tokens that are in the caption.

    Labels are padded ids `(B, L)` or a multi-hot, as for the losses.
    """

    def __init__(self, k=5, name=None, **kwargs):
        super().__init__(k=k, name=name or f"top{k}_precision", **kwargs)

    def _per_sample(self, hits, num_labels):
        return hits / float(self.k)


@keras.saving.register_keras_serializable(package="keras_superclass")
class TokenTopKRecall(_TokenTopKMetric):
    """Fraction of the caption's tokens found among the k highest-scoring.

    Captions without any label token count as recall 0.
    """

    def __init__(self, k=5, name=None, **kwargs):
        super().__init__(k=k, name=name or f"top{k}_recall", **kwargs)

    def _per_sample(self, hits, num_labels):
        return hits / ops.maximum(num_labels, 1.0)
