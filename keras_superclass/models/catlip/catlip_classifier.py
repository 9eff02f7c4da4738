"""CatLIP task: class-token ViT + synset head trained with BCE."""

import keras

from keras_superclass.losses.multilabel_losses import CatLIPLoss
from keras_superclass.models.catlip.catlip_presets import CATLIP_VOCABULARY_SIZE
from keras_superclass.models.catlip.catlip_presets import backbone_presets
from keras_superclass.models.multilabel_classifier import MultiLabelClassifier
from keras_superclass.models.superclass.superclass_backbone import (
    SuperClassBackbone,
)
from keras_superclass.utils.optional import LazyClass
from keras_superclass.utils.optional import import_tf_dependent


@keras.saving.register_keras_serializable(package="keras_superclass")
class CatLIPClassifier(MultiLabelClassifier):
    """Predicts the WordNet synsets of an image's caption (CatLIP).

    `backbone(images)["pooled_output"] -> TokenHead -> logits (B, V)` over a
    synset vocabulary (24,320 in the reference), trained with `CatLIPLoss`
    (binary cross-entropy summed over classes, batch mean). Labels are the
    synset class ids of each caption, padded with -1: the `preprocessor`
    (a `CatLIPPreprocessor`) computes them from captions, and names the
    predicted synsets by lemma.

    The architecture presets (`catlip_vit_{ti,b,l,h}16`) are corenet's ViTs:
    conv stem, class-token pooling, LayerNorm eps 1e-6.

    Args:
        backbone: an image encoder `Backbone` with `"pooled_output"`.
        vocabulary_size: number of synset classes.
        head_mlp_layers: residual MLP blocks before the classifier (0).
        ignore_ids: class ids that never become targets.
        preprocessor: a `CatLIPPreprocessor` (or `None`).
        normalize_images: normalise raw pixels on the device.
        compile: compile with the CatLIP recipe on construction.

    `from_preset(name, ...)` also takes `synset_vocabulary` (a
    `SynsetVocabulary` or its JSON path; sets `vocabulary_size`),
    `max_labels` and `resize_method` for the default preprocessor.

    Example:
    >>> model = CatLIPClassifier.from_preset(
    ...     "catlip_vit_ti16",
    ...     vocabulary_size=1000,
    ...     image_shape=(32, 32, 3),
    ...     num_layers=1,
    ... )
    >>> model.compile(total_steps=200_000, warmup_steps=10_000)
    >>> model.predict(np.zeros((1, 32, 32, 3), "uint8"), verbose=0).shape
    (1, 1000)
    """

    backbone_cls = SuperClassBackbone
    # Runs on tf.data: imported on use, so the task imports without TF.
    preprocessor_cls = LazyClass(
        "keras_superclass.models.catlip.catlip_preprocessor",
        "CatLIPPreprocessor",
    )
    architecture_presets = backbone_presets
    preprocessor_arguments = (
        "synset_vocabulary",
        "max_labels",
        "resize_method",
    )
    score_activation = "sigmoid"

    # corenet's recipe: AdamW (0.9, 0.999), eps 1e-8, weight decay 0.2 (none
    # on 1-D), cosine to 1/100 of the peak, gradients clipped to a global
    # norm of 1.0 (`clip_grad_norm_`), EMA momentum 0.0005, i.e.
    # `ema = 0.9995 ema + 0.0005 w` (Keras copies the averaged weights into
    # the model at the end of `fit()`).
    recipe = dict(
        MultiLabelClassifier.recipe,
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
        self, backbone, vocabulary_size=CATLIP_VOCABULARY_SIZE, **kwargs
    ):
        super().__init__(backbone, vocabulary_size, **kwargs)

    @classmethod
    def default_preprocessor(cls, backbone, task_kwargs, options):
        SynsetLabeler = import_tf_dependent(  # noqa: N806
            "keras_superclass.models.catlip.catlip_preprocessor",
            "SynsetLabeler",
        )

        labeler = None
        if options.get("synset_vocabulary") is not None:
            labeler = SynsetLabeler(options["synset_vocabulary"])
            size = labeler.vocabulary_size()
            if task_kwargs["vocabulary_size"] not in (
                size,
                CATLIP_VOCABULARY_SIZE,
            ):
                raise ValueError(
                    f"The synset vocabulary has {size} classes but the head "
                    f"has vocabulary_size={task_kwargs['vocabulary_size']}."
                )
            task_kwargs["vocabulary_size"] = size
        converter = cls.image_converter_for(
            backbone, task_kwargs.get("normalize_images", False), options
        )
        return cls.preprocessor_cls(
            converter, labeler, max_labels=options.get("max_labels", 64)
        )

    def default_loss(self):
        """The loss `compile(loss="auto")` uses: `CatLIPLoss` (BCE)."""
        return CatLIPLoss(self.vocabulary_size, ignore_ids=self.ignore_ids)
