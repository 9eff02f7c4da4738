"""Contrastive image-text losses: CLIP's softmax and SigLIP's sigmoid.

Both take the outputs of `ImageTextModel` (`{"image_features",
"text_features", "logit_scale"[, "logit_bias"]}`, features L2-normalised,
`logit_scale` already exponentiated) and compute in float32.

Data parallelism: the loss needs every pair of the global batch.

- Under `keras.distribution` (JAX `DataParallel` / `ModelParallel`) the
  batch a loss sees is already the global batch (the arrays are sharded,
  not split), so nothing is gathered and the loss is OpenCLIP's with
  `gather_with_grad` (every gradient flows).
- Under a per-replica runtime (`tf.distribute` strategies, PyTorch DDP)
  each replica holds its shard: `gather_features` concatenates the text
  and image features of all replicas with gradients, and the loss is the
  local rows against all columns, as OpenCLIP's `local_loss=True,
  gather_with_grad=True` (the reference configs). Averaging the replicas'
  losses (what the optimizer does) gives the global loss.
"""

import warnings

import keras
from keras import ops


def _replica_context():
    """`(rank, world_size, all_gather)` of a per-replica runtime, or `None`.

    Backend-specific (the only such place in the losses): TensorFlow's
    `tf.distribute` replica context, or an initialised `torch.distributed`
    process group. `all_gather(x)` concatenates `x` of every replica along
    axis 0 and passes gradients back to each replica's part.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return None

        def gather(x):
            return context.all_gather(x, axis=0)

        return (
            context.replica_id_in_sync_group,
            context.num_replicas_in_sync,
            gather,
        )
    if backend == "torch":
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return None
        world_size = dist.get_world_size()
        if world_size == 1:
            return None
        import torch
        import torch.distributed.nn  # noqa: F401 (the differentiable ops)

        def gather(x):
            # Deprecated in torch 2.14 for a private module's function; the
            # differentiable gather OpenCLIP uses, without the notice.
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", "torch.distributed.nn.functional.all_gather"
                )
                parts = torch.distributed.nn.all_gather(x)
            return torch.cat(parts, dim=0)

        return dist.get_rank(), world_size, gather
    return None  # JAX: keras.distribution hands the loss the global batch.


def gather_features(image_features, text_features):
    """Features of all replicas, with gradients.

    Returns:
        `(all_image, all_text, offset)`: the global features and the row of
        this replica's first pair in them (0 without a per-replica
        runtime, where the inputs are returned unchanged).
    """
    context = _replica_context()
    if context is None:
        return image_features, text_features, 0
    rank, _, gather = context
    offset = rank * ops.shape(image_features)[0]
    return gather(image_features), gather(text_features), offset


def _unpack(y_pred):
    if not isinstance(y_pred, dict) or not {
        "image_features",
        "text_features",
        "logit_scale",
    } <= set(y_pred):
        raise ValueError(
            "Contrastive losses take the outputs of ImageTextModel: a dict "
            "with 'image_features', 'text_features' and 'logit_scale' "
            f"(and 'logit_bias'); got {type(y_pred).__name__}"
            + (
                f" with keys {sorted(y_pred)}"
                if isinstance(y_pred, dict)
                else ""
            )
            + "."
        )
    image = ops.cast(y_pred["image_features"], "float32")
    text = ops.cast(y_pred["text_features"], "float32")
    scale = ops.cast(y_pred["logit_scale"], "float32")
    bias = y_pred.get("logit_bias")
    # The model repeats the scalars per row; take one.
    scale = ops.reshape(scale, (-1,))[0]
    if bias is not None:
        bias = ops.reshape(ops.cast(bias, "float32"), (-1,))[0]
    return image, text, scale, bias


def clip_loss_per_row(
    image_features, text_features, logit_scale, logit_bias=None
):
    """`clip_loss` before the mean over rows: `(B,)`."""
    all_image, all_text, offset = gather_features(image_features, text_features)
    logits_per_image = logit_scale * ops.matmul(
        image_features, ops.transpose(all_text)
    )
    logits_per_text = logit_scale * ops.matmul(
        text_features, ops.transpose(all_image)
    )
    if logit_bias is not None:
        logits_per_image = logits_per_image + logit_bias
        logits_per_text = logits_per_text + logit_bias
    labels = ops.arange(ops.shape(image_features)[0]) + offset
    image_loss = ops.sparse_categorical_crossentropy(
        labels, logits_per_image, from_logits=True
    )
    text_loss = ops.sparse_categorical_crossentropy(
        labels, logits_per_text, from_logits=True
    )
    return (image_loss + text_loss) / 2


def clip_loss(image_features, text_features, logit_scale, logit_bias=None):
    """CLIP's symmetric cross-entropy over the in-batch pairs.

    `(CE(s * I T^T, diag) + CE(s * T I^T, diag)) / 2`, each CE the mean
    over rows (OpenCLIP's `ClipLoss`). Gathers across replicas (see the
    module docstring).

    Args:
        image_features: `(B, D)` L2-normalised image embeddings.
        text_features: `(B, D)` L2-normalised text embeddings; row i is
            the caption of image i.
        logit_scale: the scale `s` (already `exp`-ed), a scalar.
        logit_bias: optional scalar added to the logits.
    """
    return ops.mean(
        clip_loss_per_row(
            image_features, text_features, logit_scale, logit_bias
        )
    )


def siglip_loss_per_row(image_features, text_features, logit_scale, bias):
    """`siglip_loss` before the mean over rows: `(B,)`."""
    _, all_text, offset = gather_features(image_features, text_features)
    logits = logit_scale * ops.matmul(image_features, ops.transpose(all_text))
    logits = logits + bias
    rows = ops.arange(ops.shape(image_features)[0]) + offset
    columns = ops.arange(ops.shape(all_text)[0])
    positive = ops.cast(ops.equal(rows[:, None], columns[None, :]), "float32")
    signs = 2.0 * positive - 1.0
    return -ops.sum(ops.log_sigmoid(signs * logits), axis=-1)


def siglip_loss(image_features, text_features, logit_scale, logit_bias):
    """SigLIP's pairwise sigmoid loss.

    `-sum_ij log sigmoid(z_ij (s <I_i, T_j> + b)) / B` with `z_ij = 1` for
    the pairs (i = j) and `-1` otherwise (OpenCLIP's `SigLipLoss`). Under
    a per-replica runtime, this replica's images meet the texts of all
    replicas (OpenCLIP's `dist_impl="gather"`).

    Args:
        image_features: `(B, D)` L2-normalised image embeddings.
        text_features: `(B, D)` L2-normalised text embeddings.
        logit_scale: the scale `s` (already `exp`-ed), a scalar.
        logit_bias: the bias `b`, a scalar.
    """
    return ops.mean(
        siglip_loss_per_row(
            image_features, text_features, logit_scale, logit_bias
        )
    )


class ContrastiveLoss(keras.losses.Loss):
    """A loss on `ImageTextModel`'s outputs; `y_true` may be `None`."""

    needs_bias = False

    def __call__(self, y_true, y_pred, sample_weight=None):
        if y_true is None:  # Keras converts y_true: give it a placeholder.
            _unpack(y_pred)
            y_true = ops.zeros_like(y_pred["logit_scale"])
        return super().__call__(y_true, y_pred, sample_weight)


@keras.saving.register_keras_serializable(package="keras_superclass")
class CLIPLoss(ContrastiveLoss):
    """`clip_loss` as a Keras loss on `ImageTextModel`'s outputs.

    `y_true` is ignored (row i of the texts is the positive of image i);
    `y_pred` is the model's output dict. `call` returns the per-row losses,
    so Keras averages them (and scales them for `tf.distribute`, whose
    replicas' gradients are summed).

    Example:
    >>> features = keras.ops.eye(3)  # three orthogonal pairs
    >>> outputs = {"image_features": features, "text_features": features,
    ...            "logit_scale": keras.ops.full((3,), 100.0)}
    >>> float(CLIPLoss()(None, outputs)) < 1e-6
    True
    """

    def __init__(self, name="clip_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return clip_loss_per_row(*_unpack(y_pred))


@keras.saving.register_keras_serializable(package="keras_superclass")
class SigLIPLoss(ContrastiveLoss):
    """`siglip_loss` as a Keras loss on `ImageTextModel`'s outputs (the
    model needs a logit bias: `logit_bias_init=-10`)."""

    needs_bias = True

    def __init__(self, name="siglip_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        image, text, scale, bias = _unpack(y_pred)
        if bias is None:
            raise ValueError(
                "SigLIPLoss needs 'logit_bias' in the model outputs: build "
                "ImageTextModel with logit_bias_init=-10.0."
            )
        return siglip_loss_per_row(image, text, scale, bias)


CONTRASTIVE_LOSSES = {"clip": CLIPLoss, "siglip": SigLIPLoss}


def get_contrastive_loss(name, **kwargs):
    """`"clip"` or `"siglip"` -> the loss object."""
    if name not in CONTRASTIVE_LOSSES:
        raise ValueError(
            f"Unknown contrastive loss {name!r}; choose one of "
            f"{sorted(CONTRASTIVE_LOSSES)}."
        )
    return CONTRASTIVE_LOSSES[name](**kwargs)
