"""Build models, losses, tokenizers and datasets from a training config."""

import os

import keras_hub

from keras_superclass.models import SuperClassBackbone
from keras_superclass.models import SuperClassClassifier
from keras_superclass.models.superclass.superclass_backbone import (
    PatchGridError,
)
from keras_superclass.training.config import ConfigError
from keras_superclass.training.image_text_builders import (
    build_image_text_preprocessor,
)
from keras_superclass.training.image_text_builders import build_image_text_task
from keras_superclass.training.image_text_builders import is_image_text
from keras_superclass.utils.presets import did_you_mean


def _architecture_presets():
    """(backbone class, presets) for every encoder family we ship."""
    from keras_superclass.models import CatLIPClassifier
    from keras_superclass.models import CRUNetBackbone

    return [
        (SuperClassBackbone, SuperClassBackbone.architecture_presets),
        (SuperClassBackbone, CatLIPClassifier.architecture_presets),
        (CRUNetBackbone, CRUNetBackbone.architecture_presets),
    ]


def known_presets():
    return sorted(name for _, p in _architecture_presets() for name in p)


def build_backbone(preset, overrides=None):
    """An encoder from an architecture preset name or a preset directory."""
    overrides = dict(overrides or {})
    try:
        for backbone_cls, presets in _architecture_presets():
            if preset in presets:
                config = {**presets[preset]["backbone"], **overrides}
                return backbone_cls(**config)
        if os.path.isdir(preset):
            return keras_hub.models.Backbone.from_preset(preset, **overrides)
    except PatchGridError as error:
        raise ConfigError(
            f"{error} In a config: 'model.backbone.image_shape' (with "
            f"'data.image_size') and 'model.backbone.patch_size'."
        ) from error
    raise ConfigError(
        f"Unknown model preset {preset!r}. Known presets: "
        f"{', '.join(known_presets())}; or a directory from save_to_preset."
        f"{did_you_mean(preset, known_presets())}"
    )


def task_class(task):
    if task == "catlip":
        from keras_superclass.models.catlip import CatLIPClassifier

        return CatLIPClassifier
    return SuperClassClassifier


def build_preprocessor(config):
    """The task's preprocessor: image converter + caption labeller.

    SuperClass labels captions with the tokenizer of `data.tokenizer`;
    CatLIP with the synset vocabulary of `data.synset_vocabulary`. The
    preprocessor is saved with the task, so presets label and predict the
    way training did.
    """
    from keras_superclass.layers import SuperClassImageConverter

    data = config["data"]
    converter = SuperClassImageConverter(
        image_size=data["image_size"],
        resize_method=data["resize_method"],
        normalize=not config["model"]["normalize_images"],
    )
    if is_image_text(config):
        return build_image_text_preprocessor(config, converter)
    if config["model"]["task"] == "catlip":
        from keras_superclass.models import CatLIPPreprocessor
        from keras_superclass.models import SynsetLabeler

        if not data["synset_vocabulary"]:
            raise ConfigError(
                "'data.synset_vocabulary' is required for model.task "
                "'catlip': build one with `keras-superclass synsets "
                "--captions 'shards/*.tfrecord' --out synsets.json`."
            )
        return CatLIPPreprocessor(
            converter,
            SynsetLabeler(data["synset_vocabulary"]),
            max_labels=data["max_labels"],
        )
    from keras_superclass.models import SuperClassPreprocessor

    return SuperClassPreprocessor(
        converter, build_tokenizer(config), max_labels=data["max_labels"]
    )


def build_task(config, preprocessor):
    """The (uncompiled) task model a config describes, with `preprocessor`
    (from `build_preprocessor`) setting the size of its head."""
    model = config["model"]
    if is_image_text(config):
        backbone = build_backbone(model["preset"], model["backbone"])
        check_image_size(config, backbone)
        return build_image_text_task(config, preprocessor, backbone)
    vocabulary_size = preprocessor.vocabulary_size()
    if model["vocabulary_size"] and model["vocabulary_size"] != vocabulary_size:
        raise ConfigError(
            f"'model.vocabulary_size' is {model['vocabulary_size']} but the "
            f"labels have {vocabulary_size} classes (tokenizer or synset "
            f"vocabulary). Remove the key or use the matching tokenizer."
        )
    backbone = build_backbone(model["preset"], model["backbone"])
    check_image_size(config, backbone)
    return task_class(model["task"])(
        backbone,
        vocabulary_size=vocabulary_size,
        head_mlp_layers=model["head_mlp_layers"],
        normalize_images=model["normalize_images"],
        preprocessor=preprocessor,
        compile=False,
    )


def check_image_size(config, backbone):
    """Raises unless the backbone takes `data.image_size` images."""
    image_size = config["data"]["image_size"]
    if tuple(backbone.input_shape[1:3]) != (image_size, image_size):
        raise ConfigError(
            f"'data.image_size' is {image_size} but the model takes "
            f"{backbone.input_shape[1]}x{backbone.input_shape[2]} images. "
            f"Set model.backbone.image_shape to [{image_size}, {image_size}, "
            f"3] or data.image_size to {backbone.input_shape[1]}."
        )


def build_loss(config, vocabulary_size, ignore_ids=()):
    """The loss a config names (`loss.name`, `loss.idf`, `loss.options`)."""
    loss = config["loss"]
    if loss["name"] == "softmax":
        from keras_superclass.losses import SuperClassLoss

        return SuperClassLoss(
            vocabulary_size,
            idf=loss["idf"],
            document_frequencies=loss["document_frequencies"],
            ignore_ids=ignore_ids,
            **loss["options"],
        )
    from keras_superclass.losses.multilabel_losses import get_multilabel_loss

    return get_multilabel_loss(
        loss["name"], vocabulary_size, ignore_ids=ignore_ids, **loss["options"]
    )


def build_tokenizer(config):
    """The tokenizer of `data.tokenizer` (a kind or a preset directory)."""
    from keras_superclass.data import tokenizers

    name = config["data"]["tokenizer"]
    if os.path.isdir(name):
        return tokenizers.load_tokenizer(name)
    return tokenizers.get_tokenizer(name)


def build_train_dataset(
    config, preprocessor, skip_batches=0, distribution=None
):
    """The infinite training stream of micro-batches, fast-forwarded.

    With a `RunDistribution`, this process's share: its files of the
    shards and its part of each global micro-batch.
    """
    from keras_superclass.data import image_text_dataset

    data = config["data"]
    if not data["train"]:
        raise ConfigError("'data.train' (a TFRecord glob) is not set.")
    training = config["training"]
    batch_size = training["micro_batch_size"]
    shard = {}
    if distribution is not None:
        # Name the key the user set (micro defaults to the global batch).
        key = "training.micro_batch_size"
        if batch_size == training["global_batch_size"]:
            key = "training.global_batch_size"
        batch_size = distribution.process_batch_size(batch_size, key)
        shard = dict(
            process_index=distribution.data_shard_index,
            process_count=distribution.data_shard_count,
        )
    return image_text_dataset(
        data["train"],
        batch_size=batch_size,
        **shard,
        preprocessor=preprocessor,
        training=True,
        shuffle_buffer=data["shuffle_buffer"],
        seed=data["seed"],
        deterministic=data["deterministic"],
        strong_augment=data["strong_augment"],
        repeat=True,
        skip_batches=skip_batches,
    )
