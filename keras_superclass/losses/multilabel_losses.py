"""Sigmoid-based multi-label losses: CatLIP's BCE and the ablation losses.

Every loss takes the labels of `MultiLabelLoss` (padded ids or a multi-hot)
and logits `(B, V)`, computes in float32 and returns one value per sample;
the default reduction `"sum_over_batch_size"` then averages over the batch
(`sample_weight` scales the per-sample values).

- `BinaryCrossEntropyLoss` / `CatLIPLoss`: BCE with logits summed over the
  classes; the batch mean gives corenet's `reduction="batch_mean"`.
- `AsymmetricLoss`: ASL (Ridnik et al., ICCV 2021), as the official code.
- `SoftMarginLoss`: `torch.nn.MultiLabelSoftMarginLoss` (mean over classes).
- `TwoWayLoss`: the two-way multi-label loss (Kobayashi, CVPR 2023).

`get_multilabel_loss(name, vocabulary_size)` builds any of them, or the
SuperClass softmax loss, by name.
"""

import keras
from keras import ops

from keras_superclass.losses.multilabel_loss import MultiLabelLoss
from keras_superclass.losses.superclass_loss import SuperClassLoss


def _bce_with_logits(multi_hot, logits):
    """Elementwise, numerically stable BCE with logits."""
    return (
        ops.relu(logits)
        - logits * multi_hot
        + ops.log1p(ops.exp(-ops.abs(logits)))
    )


def _pow(base, exponent):
    """`base ** exponent` for a Python exponent, with `x ** 0 = 1`."""
    if exponent == 0:
        return ops.ones_like(base)
    if exponent == 1:
        return base
    return ops.power(ops.maximum(base, 0.0), exponent)


@keras.saving.register_keras_serializable(package="keras_superclass")
class BinaryCrossEntropyLoss(MultiLabelLoss):
    """Binary cross-entropy with logits, summed over the classes.

    Per sample `sum_c [max(z, 0) - z y + log(1 + exp(-|z|))]`; the batch mean
    of these is corenet's `binary_cross_entropy` with
    `reduction="batch_mean"` (sum over all elements / batch size).

    Args:
        vocabulary_size: number of classes `V`.
        pad_id: padding value of id labels.
        ignore_ids: ids that never become targets.
        label_format: `"auto"`, `"ids"` or `"multi_hot"`.

    Example:
    >>> loss = BinaryCrossEntropyLoss(vocabulary_size=4)
    >>> round(float(loss(np.array([[0, -1]]), np.zeros((1, 4)))), 4)
    2.7726
    """

    def compute_per_sample(self, multi_hot, logits):
        return ops.sum(_bce_with_logits(multi_hot, logits), axis=-1)


@keras.saving.register_keras_serializable(package="keras_superclass")
class CatLIPLoss(BinaryCrossEntropyLoss):
    """The CatLIP loss: `BinaryCrossEntropyLoss` over the synset classes.

    Example:
    >>> loss = CatLIPLoss(vocabulary_size=24320)
    """

    def __init__(self, vocabulary_size, name="catlip_loss", **kwargs):
        super().__init__(vocabulary_size, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="keras_superclass")
class AsymmetricLoss(MultiLabelLoss):
    """Asymmetric loss (ASL, Ridnik et al. 2021), summed over the classes.

    With `p = sigmoid(z)` and the shifted negative probability
    `p_m = min(1 - p + clip, 1)`:

        L = -sum_c [ y (1 - p)^gamma_pos log(max(p, eps))
                   + (1 - y) (1 - p_m)^gamma_neg log(max(p_m, eps)) ]

    as the official `AsymmetricLoss` (whose `-loss.sum()` over the batch is
    the per-sample sum here times the batch size). The focusing weights
    carry gradients, as in the official code; `stop_gradient_weights=True`
    detaches them.

    Args:
        vocabulary_size: number of classes `V`.
        gamma_neg: focusing of the negatives (4).
        gamma_pos: focusing of the positives (1; 0 in some configs).
        clip: probability margin of the negatives (0.05; 0 disables).
        eps: clamp of the probabilities inside the logs.
        stop_gradient_weights: no gradient through the focusing weights.

    Example:
    >>> loss = AsymmetricLoss(vocabulary_size=8)
    """

    def __init__(
        self,
        vocabulary_size,
        gamma_neg=4.0,
        gamma_pos=1.0,
        clip=0.05,
        eps=1e-8,
        stop_gradient_weights=False,
        pad_id=-1,
        ignore_ids=None,
        label_format="auto",
        reduction="sum_over_batch_size",
        name="asymmetric_loss",
        dtype=None,
    ):
        super().__init__(
            vocabulary_size,
            pad_id=pad_id,
            ignore_ids=ignore_ids,
            label_format=label_format,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        self.gamma_neg = float(gamma_neg)
        self.gamma_pos = float(gamma_pos)
        self.clip = None if clip is None else float(clip)
        self.eps = float(eps)
        self.stop_gradient_weights = bool(stop_gradient_weights)

    def compute_per_sample(self, multi_hot, logits):
        y = multi_hot
        xs_pos = ops.sigmoid(logits)
        xs_neg = 1.0 - xs_pos
        if self.clip is not None and self.clip > 0:
            xs_neg = ops.minimum(xs_neg + self.clip, 1.0)
        loss = y * ops.log(ops.maximum(xs_pos, self.eps)) + (1.0 - y) * ops.log(
            ops.maximum(xs_neg, self.eps)
        )
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            # (1 - pt)^gamma with pt = p for positives and p_m for negatives;
            # the scalar exponents keep the gradient finite at pt = 1.
            weights = y * _pow(1.0 - xs_pos, self.gamma_pos) + (1.0 - y) * (
                _pow(1.0 - xs_neg, self.gamma_neg)
            )
            if self.stop_gradient_weights:
                weights = ops.stop_gradient(weights)
            loss = loss * weights
        return -ops.sum(loss, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            gamma_neg=self.gamma_neg,
            gamma_pos=self.gamma_pos,
            clip=self.clip,
            eps=self.eps,
            stop_gradient_weights=self.stop_gradient_weights,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_superclass")
class SoftMarginLoss(MultiLabelLoss):
    """`torch.nn.MultiLabelSoftMarginLoss`: BCE with logits, class mean.

    Per sample `-(1/V) sum_c [y log sigmoid(z) + (1 - y) log sigmoid(-z)]`;
    the batch mean equals PyTorch's `multilabel_soft_margin_loss`.

    Example:
    >>> loss = SoftMarginLoss(vocabulary_size=8)
    """

    def compute_per_sample(self, multi_hot, logits):
        return ops.mean(_bce_with_logits(multi_hot, logits), axis=-1)


@keras.saving.register_keras_serializable(package="keras_superclass")
class TwoWayLoss(MultiLabelLoss):
    """Two-way multi-label loss (Kobayashi, CVPR 2023), official form.

    With the masked log-sum-exps (masked entries get `mask_value`, -100 in
    the official code, added to the scaled logits)

        P = Tp * logsumexp(-z / Tp over positives)
        N = Tn * logsumexp( z / Tn over negatives)

    taken along classes (sample-wise) and along the batch (class-wise), the
    loss is `mean_i softplus(N_i + P_i)` over samples with a positive plus
    `mean_c softplus(N_c + P_c)` over classes with a positive.

    The class-wise term couples the samples of a batch, so it is not a sum
    of per-sample terms: each sample gets
    `B * [i has a positive] * softplus(N_i + P_i) / num_valid + class_term`,
    whose batch mean is the official value. `sample_weight` scales these
    shares; the class-wise term still sees every sample. A batch (or the
    class side) without any positive contributes 0 where the official code
    returns NaN.

    Args:
        vocabulary_size: number of classes `V`.
        tp: temperature of the positives (4).
        tn: temperature of the negatives (1).
        mask_value: value added to masked entries (-100).

    Example:
    >>> loss = TwoWayLoss(vocabulary_size=8)
    """

    def __init__(
        self,
        vocabulary_size,
        tp=4.0,
        tn=1.0,
        mask_value=-100.0,
        pad_id=-1,
        ignore_ids=None,
        label_format="auto",
        reduction="sum_over_batch_size",
        name="two_way_loss",
        dtype=None,
    ):
        super().__init__(
            vocabulary_size,
            pad_id=pad_id,
            ignore_ids=ignore_ids,
            label_format=label_format,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        self.tp = float(tp)
        self.tn = float(tn)
        self.mask_value = float(mask_value)

    def compute_per_sample(self, multi_hot, logits):
        positive = multi_hot > 0
        pmask = ops.where(positive, 0.0, self.mask_value)
        nmask = ops.where(multi_hot == 0, 0.0, self.mask_value)
        p_terms = -logits / self.tp + pmask
        n_terms = logits / self.tn + nmask

        sample_valid = ops.cast(ops.any(positive, axis=1), "float32")
        class_valid = ops.cast(ops.any(positive, axis=0), "float32")

        p_sample = self.tp * ops.logsumexp(p_terms, axis=1)
        n_sample = self.tn * ops.logsumexp(n_terms, axis=1)
        sample_losses = ops.softplus(n_sample + p_sample) * sample_valid
        num_samples = ops.sum(sample_valid)

        p_class = self.tp * ops.logsumexp(p_terms, axis=0)
        n_class = self.tn * ops.logsumexp(n_terms, axis=0)
        class_losses = ops.softplus(n_class + p_class) * class_valid
        class_term = ops.sum(class_losses) / ops.maximum(
            ops.sum(class_valid), 1.0
        )

        batch = ops.cast(ops.shape(logits)[0], "float32")
        return batch * sample_losses / ops.maximum(num_samples, 1.0) + (
            class_term
        )

    def get_config(self):
        config = super().get_config()
        config.update(tp=self.tp, tn=self.tn, mask_value=self.mask_value)
        return config


MULTILABEL_LOSSES = {
    "softmax": SuperClassLoss,
    "superclass": SuperClassLoss,
    "bce": BinaryCrossEntropyLoss,
    "catlip": CatLIPLoss,
    "asl": AsymmetricLoss,
    "softmargin": SoftMarginLoss,
    "twoway": TwoWayLoss,
}


def get_multilabel_loss(name, vocabulary_size, **kwargs):
    """Builds a multi-label loss by name.

    Names: `"softmax"` / `"superclass"` (`SuperClassLoss`; pass
    `idf="online" | "fixed" | "none"`), `"bce"`, `"catlip"`, `"asl"`,
    `"softmargin"`, `"twoway"`. Extra keyword arguments go to the class
    (e.g. `gamma_neg=` for ASL, `tp=` for two-way).

    Example:
    >>> loss = get_multilabel_loss("asl", 1000, gamma_pos=0)
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    aliases = {"twowayloss": "twoway", "binarycrossentropy": "bce"}
    key = aliases.get(key, key)
    if key not in MULTILABEL_LOSSES:
        known = ", ".join(sorted(MULTILABEL_LOSSES))
        raise ValueError(
            f"Unknown multi-label loss {name!r}. Known losses: {known}."
        )
    return MULTILABEL_LOSSES[key](vocabulary_size, **kwargs)
