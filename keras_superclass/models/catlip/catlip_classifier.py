"""CatLIP task: class-token ViT + synset head trained with BCE."""

import keras

from keras_superclass.losses.multilabel_losses import MULTILABEL_LOSSES
from keras_superclass.losses.multilabel_losses import CatLIPLoss
from keras_superclass.losses.multilabel_losses import get_multilabel_loss
from keras_superclass.models.catlip.catlip_presets import CATLIP_VOCABULARY_SIZE
from keras_superclass.models.catlip.catlip_presets import backbone_presets
from keras_superclass.models.superclass.superclass_backbone import (
    SuperClassBackbone,
)
from keras_superclass.models.superclass.superclass_classifier import (
    SuperClassClassifier,
)
from keras_superclass.models.superclass.superclass_classifier import (
    reference_optimizer,
)


def _is_loss_name(loss):
    if not isinstance(loss, str):
        return False
    key = loss.lower().replace("-", "").replace("_", "")
    return key in MULTILABEL_LOSSES or key in ("twowayloss",)


@keras.saving.register_keras_serializable(package="keras_superclass")
class CatLIPClassifier(SuperClassClassifier):
    """Predicts the WordNet synsets of an image's caption (CatLIP).

    `backbone(images)["pooled_output"] -> TokenHead -> logits (B, V)` over a
    synset vocabulary (24,320 in the reference), trained with `CatLIPLoss`
    (binary cross-entropy summed over classes, batch mean). Labels are the
    synset class ids of each caption, padded with -1 (see
    `keras_superclass.data.synsets`), or a multi-hot `(B, V)`.

    The architecture presets (`catlip_vit_{ti,b,l,h}16`) are corenet's ViTs:
    conv stem, class-token pooling, LayerNorm eps 1e-6.

    Args:
        backbone: an image encoder `Backbone` with `"pooled_output"`.
        vocabulary_size: number of synset classes.
        head_mlp_layers: residual MLP blocks before the classifier (0).
        ignore_ids: class ids that never become targets.
        preprocessor: optional preprocessing layer.
        compile: compile with the CatLIP recipe on construction.

    Example:
    >>> model = CatLIPClassifier.from_preset(
    ...     "catlip_vit_ti16", vocabulary_size=1000
    ... )
    >>> model.compile(total_steps=200_000, warmup_steps=10_000)
    >>> # model.fit(images_and_padded_synset_ids, epochs=1)
    """

    backbone_cls = SuperClassBackbone
    architecture_presets = backbone_presets

    def __init__(
        self,
        backbone,
        vocabulary_size=CATLIP_VOCABULARY_SIZE,
        head_mlp_layers=0,
        ignore_ids=None,
        preprocessor=None,
        compile=True,
        **kwargs,
    ):
        super().__init__(
            backbone,
            vocabulary_size=vocabulary_size,
            head_mlp_layers=head_mlp_layers,
            ignore_ids=ignore_ids,
            preprocessor=preprocessor,
            compile=compile,
            **kwargs,
        )

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        *,
        learning_rate=1e-3,
        warmup_steps=10000,
        total_steps=None,
        weight_decay=0.2,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        min_learning_rate_ratio=0.01,
        global_clipnorm=1.0,
        clipnorm=None,
        use_ema=True,
        ema_momentum=0.9995,
        loss_kwargs=None,
        **kwargs,
    ):
        """Compiles with the CatLIP recipe unless told otherwise.

        `"auto"` optimizer: AdamW (betas 0.9/0.999, eps 1e-8, weight decay
        0.2 on weights with ndim >= 2), `warmup_steps` of linear warmup then
        cosine decay to `min_learning_rate_ratio` (1/100) of the peak over
        `total_steps` (constant rate when `total_steps` is None), gradients
        clipped to a global norm of 1.0, and an exponential moving average
        of the weights (corenet's EMA momentum 0.0005, i.e.
        `ema = 0.9995 ema + 0.0005 w`). Keras copies the averaged weights
        into the model at the end of `fit()`.

        `"auto"` loss: `CatLIPLoss`. A loss name (`"bce"`, `"asl"`,
        `"softmargin"`, `"twoway"`, `"softmax"`) builds that loss for this
        head, with `loss_kwargs` (e.g. `{"idf": "none"}` for softmax).
        `"auto"` metrics: synset top-5 precision and recall.
        """
        if optimizer == "auto":
            if clipnorm is not None and global_clipnorm is not None:
                raise ValueError(
                    "Pass either `clipnorm` (per variable) or "
                    "`global_clipnorm` (all gradients, the reference), not "
                    "both; set the other to None."
                )
            optimizer = reference_optimizer(
                self,
                learning_rate=learning_rate,
                warmup_steps=warmup_steps,
                total_steps=total_steps,
                weight_decay=weight_decay,
                beta_1=beta_1,
                beta_2=beta_2,
                epsilon=epsilon,
                min_learning_rate_ratio=min_learning_rate_ratio,
                clipnorm=clipnorm,
                use_ema=use_ema,
                ema_momentum=ema_momentum,
            )
            # corenet clips the norm of all gradients together
            # (`clip_grad_norm_`), i.e. Keras' `global_clipnorm`.
            optimizer.global_clipnorm = global_clipnorm
        if loss == "auto":
            loss = CatLIPLoss(
                self.vocabulary_size,
                ignore_ids=self.ignore_ids,
                **(loss_kwargs or {}),
            )
        elif _is_loss_name(loss):
            loss = get_multilabel_loss(
                loss,
                self.vocabulary_size,
                ignore_ids=self.ignore_ids,
                **(loss_kwargs or {}),
            )
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )
