"""SuperClass task: image encoder + multi-label token head + IDF loss."""

import keras

from keras_superclass.layers.idf_statistics import IDFStatistics
from keras_superclass.losses.superclass_loss import SuperClassLoss
from keras_superclass.models.multilabel_classifier import MultiLabelClassifier
from keras_superclass.models.superclass.superclass_backbone import (
    SuperClassBackbone,
)
from keras_superclass.models.superclass.superclass_presets import (
    CLIP_VOCABULARY_SIZE,
)
from keras_superclass.models.superclass.superclass_presets import (
    backbone_presets,
)
from keras_superclass.utils.optional import LazyClass
from keras_superclass.utils.optional import import_tf_dependent


@keras.saving.register_keras_serializable(package="keras_superclass")
class SuperClassClassifier(MultiLabelClassifier):
    """Predicts the bag of caption tokens from an image (SuperClass).

    `backbone(images)["pooled_output"] -> TokenHead -> logits (B, V)`,
    trained with `SuperClassLoss`. The task owns the online-IDF statistics
    (`idf_statistics`), so checkpoints and presets carry them, and its
    `preprocessor` (a `SuperClassPreprocessor`: image converter + caption
    tokenizer), so a loaded preset takes raw images and captions.

    Args:
        backbone: any image encoder `Backbone` whose output dict holds
            `"pooled_output"` (`SuperClassBackbone`, `CRUNetBackbone`).
        vocabulary_size: classes of the head (49,408 for CLIP BPE).
        head_mlp_layers: residual MLP blocks before the classifier.
        ignore_ids: token ids that never become targets (special tokens);
            the preprocessor already drops them, this guards raw labels.
        preprocessor: a `SuperClassPreprocessor` (or `None`).
        normalize_images: take raw pixels in [0, 255] (uint8) and apply the
            OpenAI mean/std on the device; `False` (default): inputs are
            already normalised (the preprocessor's converter does it).
        compile: compile with the reference recipe on construction.

    `from_preset(name, ...)` also takes `tokenizer` (a kind such as
    `"clip"` or a tokenizer directory; default CLIP BPE for a 49,408-way
    head), `max_labels` and `resize_method` for the default preprocessor.

    Example:
    >>> model = SuperClassClassifier.from_preset(
    ...     "superclass_vit_ti16", image_shape=(32, 32, 3), num_layers=1
    ... )
    >>> model.compile(total_steps=1000)
    >>> images = np.random.randint(0, 256, (2, 48, 40, 3), "uint8")
    >>> logits = model.predict(images, verbose=0)
    >>> logits.shape
    (2, 49408)
    >>> len(model.predict_labels(images, top_k=3)[0])
    3
    """

    backbone_cls = SuperClassBackbone
    # Runs on tf.data: imported on use, so the task imports without TF.
    preprocessor_cls = LazyClass(
        "keras_superclass.models.superclass.superclass_preprocessor",
        "SuperClassPreprocessor",
    )
    architecture_presets = backbone_presets
    preprocessor_arguments = ("tokenizer", "max_labels", "resize_method")

    def __init__(
        self, backbone, vocabulary_size=CLIP_VOCABULARY_SIZE, **kwargs
    ):
        super().__init__(backbone, vocabulary_size, **kwargs)

    def build_state(self, vocabulary_size):
        # Tracked after the functional init so every backend sees it.
        self.idf_statistics = IDFStatistics(
            vocabulary_size, name="idf_statistics"
        )

    @classmethod
    def default_preprocessor(cls, backbone, task_kwargs, options):
        load_tokenizer = import_tf_dependent(
            "keras_superclass.data.tokenizers", "load_tokenizer"
        )

        tokenizer = options.get("tokenizer")
        size = task_kwargs["vocabulary_size"]
        if tokenizer is None and size == CLIP_VOCABULARY_SIZE:
            tokenizer = "clip"
        if isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer)
        if tokenizer is not None and tokenizer.vocabulary_size() != size:
            raise ValueError(
                f"The tokenizer has {tokenizer.vocabulary_size()} ids but "
                f"the head has vocabulary_size={size}. Pass "
                f"vocabulary_size={tokenizer.vocabulary_size()}."
            )
        converter = cls.image_converter_for(
            backbone, task_kwargs.get("normalize_images", False), options
        )
        return cls.preprocessor_cls(
            converter, tokenizer, max_labels=options.get("max_labels", 64)
        )

    def compile(self, *args, idf="online", **kwargs):
        """Compiles with the reference recipe (see `MultiLabelClassifier`).

        `idf`: the IDF weighting of the `"auto"` loss (`"online"`, the
        reference's running statistics bound to this model; `"fixed"`;
        `"none"`). The recipe: AdamW, betas 0.9/0.98, eps 1e-6, weight
        decay 0.2 on weights with ndim >= 2, linear warmup then cosine
        decay to 0.
        """
        self.idf = idf
        super().compile(*args, **kwargs)

    def default_loss(self):
        """The loss `compile(loss="auto")` uses: `SuperClassLoss`."""
        return SuperClassLoss(
            self.vocabulary_size,
            idf=getattr(self, "idf", "online"),
            ignore_ids=self.ignore_ids,
        )

    def check_loss(self, loss):
        super().check_loss(loss)
        if getattr(loss, "idf", None) == "online":
            loss.bind_statistics(self.idf_statistics)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        # The online IDF statistics move only on training steps.
        with self.idf_statistics.updates(training):
            return super().compute_loss(
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                training=training,
            )
