"""Multi-label losses against NumPy formulas and PyTorch's functionals."""

import keras
import numpy as np
import pytest

from keras_superclass.losses.multilabel_losses import AsymmetricLoss
from keras_superclass.losses.multilabel_losses import BinaryCrossEntropyLoss
from keras_superclass.losses.multilabel_losses import CatLIPLoss
from keras_superclass.losses.multilabel_losses import SoftMarginLoss
from keras_superclass.losses.multilabel_losses import TwoWayLoss
from keras_superclass.losses.multilabel_losses import get_multilabel_loss
from keras_superclass.losses.superclass_loss import SuperClassLoss

B, V = 5, 12


def _data(seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((B, V)) * scale).astype("float32")
    multi_hot = (rng.random((B, V)) < 0.25).astype("float32")
    multi_hot[0] = 0.0  # a caption without any label
    multi_hot[1, :3] = 1.0
    return multi_hot, logits


# ---- Independent NumPy formulas (float64) ----


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_bce(y, z):
    p = _sigmoid(z.astype(np.float64))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(axis=1)


def np_softmargin(y, z):
    return np_bce(y, z) / y.shape[1]


def np_asl(y, z, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8):
    p = _sigmoid(z.astype(np.float64))
    p_neg = np.minimum(1 - p + clip, 1.0) if clip else 1 - p
    pos = y * (1 - p) ** gamma_pos * np.log(np.maximum(p, eps))
    neg = (1 - y) * (1 - p_neg) ** gamma_neg * np.log(np.maximum(p_neg, eps))
    return -(pos + neg).sum(axis=1)


def _lse(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(
        axis
    )


def _softplus(a):
    return np.log1p(np.exp(-np.abs(a))) + np.maximum(a, 0)


def np_twoway_parts(y, z, tp=4.0, tn=1.0, ninf=-100.0):
    """Official two-way loss terms: per-sample values, validity, class term."""
    z = z.astype(np.float64)
    pmask = np.where(y > 0, 0.0, ninf)
    nmask = np.where(y == 0, 0.0, ninf)
    parts = []
    for axis in (1, 0):  # sample-wise, class-wise
        plogit = tp * _lse(-z / tp + pmask, axis)
        nlogit = tn * _lse(z / tn + nmask, axis)
        parts.append((_softplus(nlogit + plogit), (y > 0).any(axis=axis)))
    (sample, sample_valid), (cls, class_valid) = parts
    return sample, sample_valid, cls[class_valid].mean()


def np_twoway_total(y, z, **kwargs):
    """The official batch loss (mean over valid samples + valid classes)."""
    sample, valid, class_term = np_twoway_parts(y, z, **kwargs)
    return sample[valid].mean() + class_term


def _per_sample(loss, y, z):
    loss_none = loss.__class__.from_config(
        {**loss.get_config(), "reduction": "none"}
    )
    return keras.ops.convert_to_numpy(loss_none(y, z))


# ---- Tests ----


@pytest.mark.parametrize(
    "loss_cls, reference",
    [
        (BinaryCrossEntropyLoss, np_bce),
        (CatLIPLoss, np_bce),
        (SoftMarginLoss, np_softmargin),
        (AsymmetricLoss, np_asl),
    ],
)
def test_per_sample_values_match_numpy(loss_cls, reference):
    y, z = _data()
    loss = loss_cls(V)
    expected = reference(y, z)
    np.testing.assert_allclose(
        _per_sample(loss, y, z), expected, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        float(loss(y, z)), expected.mean(), rtol=1e-5, atol=1e-5
    )
    # Per-sample weights: keras' sum_over_batch_size = sum(w * l) / B.
    w = np.array([0.0, 1.0, 2.0, 0.5, 1.0], dtype="float32")
    np.testing.assert_allclose(
        float(loss(y, z, sample_weight=w)),
        (w * expected).sum() / B,
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gamma_neg": 4.0, "gamma_pos": 0.0},
        {"gamma_neg": 2.0, "gamma_pos": 1.0, "clip": 0.0},
        {"gamma_neg": 0.0, "gamma_pos": 0.0, "clip": 0.0},
    ],
)
def test_asl_variants_match_numpy(kwargs):
    y, z = _data(seed=1)
    loss = AsymmetricLoss(V, **kwargs)
    np.testing.assert_allclose(
        _per_sample(loss, y, z), np_asl(y, z, **kwargs), rtol=1e-5, atol=1e-5
    )
    if not any(kwargs.values()):
        # No focusing and no clipping: plain BCE.
        np.testing.assert_allclose(
            _per_sample(loss, y, z), np_bce(y, z), rtol=1e-5, atol=1e-5
        )


def test_bce_and_softmargin_match_torch():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    y, z = _data(seed=2)
    yt, zt = torch.from_numpy(y), torch.from_numpy(z)
    # corenet's "batch_mean": sum over everything / batch size.
    bce = functional.binary_cross_entropy_with_logits(zt, yt, reduction="sum")
    np.testing.assert_allclose(
        float(CatLIPLoss(V)(y, z)), bce.item() / B, rtol=1e-5
    )
    per = functional.binary_cross_entropy_with_logits(
        zt, yt, reduction="none"
    ).sum(1)
    np.testing.assert_allclose(
        _per_sample(BinaryCrossEntropyLoss(V), y, z), per.numpy(), rtol=1e-5
    )
    soft = functional.multilabel_soft_margin_loss(zt, yt)
    np.testing.assert_allclose(
        float(SoftMarginLoss(V)(y, z)), soft.item(), rtol=1e-5
    )
    soft_per = functional.multilabel_soft_margin_loss(zt, yt, reduction="none")
    np.testing.assert_allclose(
        _per_sample(SoftMarginLoss(V), y, z), soft_per.numpy(), rtol=1e-5
    )


def test_twoway_matches_official_formula():
    y, z = _data(seed=3)
    loss = TwoWayLoss(V)
    expected = np_twoway_total(y, z)
    np.testing.assert_allclose(float(loss(y, z)), expected, rtol=1e-5)
    per = _per_sample(loss, y, z)
    assert per.shape == (B,)
    np.testing.assert_allclose(per.mean(), expected, rtol=1e-5)
    # Each sample: B * its share of the sample term + the class term.
    sample, valid, class_term = np_twoway_parts(y, z)
    expected_per = B * np.where(valid, sample, 0.0) / valid.sum() + class_term
    np.testing.assert_allclose(per, expected_per, rtol=1e-5)
    assert not valid[0]
    np.testing.assert_allclose(per[0], class_term, rtol=1e-5)
    # Other temperatures.
    loss = TwoWayLoss(V, tp=2.0, tn=0.5)
    np.testing.assert_allclose(
        float(loss(y, z)), np_twoway_total(y, z, tp=2.0, tn=0.5), rtol=1e-5
    )
    # No positive in the whole batch: 0, not NaN.
    empty = np.zeros_like(y)
    assert float(TwoWayLoss(V)(empty, z)) == 0.0


def test_ids_and_multi_hot_labels_agree():
    ids = np.array([[0, 3, -1], [5, 5, 7], [-1, -1, -1]], dtype="int32")
    multi_hot = np.zeros((3, V), dtype="float32")
    multi_hot[0, [0, 3]] = 1
    multi_hot[1, [5, 7]] = 1
    z = np.random.default_rng(4).standard_normal((3, V)).astype("float32")
    for name in ("bce", "asl", "softmargin", "twoway"):
        loss = get_multilabel_loss(name, V)
        np.testing.assert_allclose(
            float(loss(ids, z)), float(loss(multi_hot, z)), rtol=1e-6
        )


def test_factory_and_serialization():
    assert isinstance(get_multilabel_loss("bce", V), BinaryCrossEntropyLoss)
    assert isinstance(get_multilabel_loss("CatLIP", V), CatLIPLoss)
    assert isinstance(get_multilabel_loss("soft_margin", V), SoftMarginLoss)
    assert isinstance(get_multilabel_loss("two-way", V), TwoWayLoss)
    softmax = get_multilabel_loss("softmax", V, idf="none")
    assert isinstance(softmax, SuperClassLoss) and softmax.idf == "none"
    asl = get_multilabel_loss("asl", V, gamma_pos=0)
    assert asl.gamma_pos == 0.0 and asl.gamma_neg == 4.0
    with pytest.raises(ValueError, match="Known losses"):
        get_multilabel_loss("hinge", V)
    for loss in (asl, TwoWayLoss(V, tp=3.0), CatLIPLoss(V)):
        clone = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(clone) is type(loss)
        assert clone.get_config() == loss.get_config()


def test_vocabulary_mismatch_raises():
    with pytest.raises(ValueError, match="vocabulary"):
        CatLIPLoss(V + 1)(np.zeros((2, V)), np.zeros((2, V)))


def _gradient(loss, y, z):
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda t: loss(y, t))(z))
    if backend == "tensorflow":
        import tensorflow as tf

        t = tf.Variable(z)
        with tf.GradientTape() as tape:
            value = loss(y, t)
        return tape.gradient(value, t).numpy()
    import torch

    t = torch.tensor(z, requires_grad=True)
    loss(y, t).backward()
    return t.grad.numpy()


@pytest.mark.parametrize("name", ["bce", "asl", "softmargin", "twoway"])
def test_gradients_finite_on_saturated_logits(name):
    y, z = _data(seed=5, scale=40.0)  # sigmoid saturates to 0/1
    kwargs = {"gamma_pos": 0.0} if name == "asl" else {}
    grad = _gradient(get_multilabel_loss(name, V, **kwargs), y, z)
    assert grad.shape == (B, V)
    assert np.isfinite(grad).all()
    assert np.abs(grad).sum() > 0


def test_bce_gradient_matches_sigmoid_minus_target():
    y, z = _data(seed=6)
    grad = _gradient(CatLIPLoss(V), y, z)
    np.testing.assert_allclose(grad, (_sigmoid(z) - y) / B, atol=1e-6)
