"""Base class of the multi-label losses over a token/synset vocabulary."""

import re

import keras
from keras import ops

from keras_superclass.losses.labels import labels_to_multi_hot


class MultiLabelLoss(keras.losses.Loss):
    """Base of every multi-label loss: labels in, per-sample values out.

    Turns `y_true` (padded ids `(B, L)` with `pad_id`, or a multi-hot
    `(B, V)`) into a float32 multi-hot on the device, casts the logits to
    float32 (mixed precision), checks that the vocabulary matches the head,
    and hands both to `compute_per_sample`, which subclasses implement.
    Reduction then follows `keras.losses.Loss`, so `sample_weight` works.

    Samples holding an out-of-range id cannot raise inside a compiled step,
    so their loss becomes NaN (never silently ignored); eager calls raise.

    Args:
        vocabulary_size: number of classes `V` of the head.
        pad_id: padding value of id labels.
        ignore_ids: ids that never become targets (e.g. special tokens).
        label_format: `"auto"` (multi-hot when the last dimension is `V`),
            `"ids"` or `"multi_hot"`.
    """

    def __init__(
        self,
        vocabulary_size,
        pad_id=-1,
        ignore_ids=None,
        label_format="auto",
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        # Default name from the class: BinaryCrossEntropyLoss ->
        # "binary_cross_entropy_loss".
        name = name or re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__)
        super().__init__(reduction=reduction, name=name.lower(), dtype=dtype)
        self.vocabulary_size = int(vocabulary_size)
        self.pad_id = int(pad_id)
        self.ignore_ids = sorted(int(i) for i in (ignore_ids or []))
        self.label_format = label_format

    def compute_per_sample(self, multi_hot, logits):
        """`(B, V)` float32 multi-hot and logits -> `(B,)` losses."""
        raise NotImplementedError

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        if logits.shape[-1] != self.vocabulary_size:
            raise ValueError(
                f"The loss was built for a vocabulary of "
                f"{self.vocabulary_size} classes but the model outputs "
                f"{logits.shape[-1]} logits. Use the same `vocabulary_size` "
                f"for the head, the loss and the tokenizer."
            )
        multi_hot, invalid = labels_to_multi_hot(
            y_true,
            self.vocabulary_size,
            pad_id=self.pad_id,
            ignore_ids=self.ignore_ids,
            label_format=self.label_format,
        )
        losses = self.compute_per_sample(multi_hot, logits)
        return ops.where(invalid, float("nan"), losses)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            pad_id=self.pad_id,
            ignore_ids=self.ignore_ids,
            label_format=self.label_format,
        )
        return config
