"""CatLIP task: class-token ViT + synset head trained with BCE."""

import keras

from keras_superclass.losses.multilabel_losses import CatLIPLoss
from keras_superclass.models.catlip.catlip_presets import CATLIP_VOCABULARY_SIZE
from keras_superclass.models.catlip.catlip_presets import backbone_presets
from keras_superclass.models.superclass.superclass_backbone import (
    SuperClassBackbone,
)
from keras_superclass.models.superclass.superclass_classifier import (
    SuperClassClassifier,
)


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

    # corenet's recipe: AdamW (0.9, 0.999), eps 1e-8, weight decay 0.2 (none
    # on 1-D), cosine to 1/100 of the peak, gradients clipped to a global
    # norm of 1.0 (`clip_grad_norm_`), EMA momentum 0.0005, i.e.
    # `ema = 0.9995 ema + 0.0005 w` (Keras copies the averaged weights into
    # the model at the end of `fit()`).
    recipe = dict(
        SuperClassClassifier.recipe,
        learning_rate=1e-3,
        warmup_steps=10000,
        beta_2=0.999,
        epsilon=1e-8,
        min_learning_rate_ratio=0.01,
        global_clipnorm=1.0,
        use_ema=True,
        ema_momentum=0.9995,
    )

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

    def default_loss(self, idf="online"):
        """The loss `compile(loss="auto")` uses: `CatLIPLoss` (BCE)."""
        return CatLIPLoss(self.vocabulary_size, ignore_ids=self.ignore_ids)
