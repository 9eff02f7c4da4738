"""Build the image-text tasks (`model.task: lit | clip`) from a config.

`clip` trains an image encoder (an architecture preset, random init) and a
text tower from scratch; `lit` loads a pretrained encoder of this project
(a preset directory, e.g. `keras-superclass export` of a `cls_*` run) and
locks it except its last `model.lock_image_unlocked_groups` groups (1: the
image projection only, as the reference LiT configs). Both train with the
contrastive loss `loss.contrastive` over batches of (images, caption token
sequences).
"""

import os

from keras_superclass.training.config import ConfigError

IMAGE_TEXT_TASKS = ("lit", "clip")
DEFAULT_SEQUENCE_LENGTH = 77


def is_image_text(config):
    """Whether a config trains an image-text task (lit or clip)."""
    return config["model"]["task"] in IMAGE_TEXT_TASKS


def _sequence_length(config):
    text = config["model"]["text_encoder"]
    return int(text.get("sequence_length", DEFAULT_SEQUENCE_LENGTH))


def build_image_text_preprocessor(config, converter):
    """Image converter + tokenizer padding captions to the text context."""
    from keras_superclass.data import tokenizers
    from keras_superclass.models.image_text.image_text_preprocessor import (
        ImageTextPreprocessor,
    )
    from keras_superclass.training.builders import build_tokenizer

    length = _sequence_length(config)
    name = config["data"]["tokenizer"]
    if name == "clip":  # EOT kept in the last slot when truncating
        tokenizer = tokenizers.get_tokenizer("clip", sequence_length=length)
    else:
        tokenizer = build_tokenizer(config)
        text = config["model"]["text_encoder"]
        if tokenizers.tokenizer_kind(tokenizer) != "clip" and (
            text.get("pooling", "argmax") == "argmax"
        ):
            raise ConfigError(
                f"'data.tokenizer' ({name!r}) is not CLIP BPE, whose end "
                f"token is its largest id, which the text tower pools by "
                f"default. Use data.tokenizer=clip, or set "
                f"model.text_encoder.pooling=eos and "
                f"model.text_encoder.end_token_id to the tokenizer's end id."
            )
    return ImageTextPreprocessor(converter, tokenizer, sequence_length=length)


def text_encoder_arguments(config, preprocessor):
    """The text tower's arguments: the config's, vocabulary from the
    tokenizer."""
    text = dict(config["model"]["text_encoder"])
    vocabulary_size = preprocessor.tokenizer.vocabulary_size()
    given = text.get("vocabulary_size")
    if given and given != vocabulary_size:
        raise ConfigError(
            f"'model.text_encoder.vocabulary_size' is {given} but the "
            f"tokenizer has {vocabulary_size} ids: remove the key."
        )
    text["vocabulary_size"] = vocabulary_size
    text["sequence_length"] = preprocessor.sequence_length
    return text


def build_image_text_task(config, preprocessor, backbone):
    """The (uncompiled) lit or clip task, the image tower locked for lit."""
    from keras_superclass.models.image_text.image_text_model import (
        ImageTextModel,
    )

    model = config["model"]
    if model["task"] == "lit" and not os.path.isdir(model["preset"]):
        raise ConfigError(
            f"'model.preset' ({model['preset']!r}) of a lit run must be a "
            f"pretrained encoder's preset directory (e.g. `keras-superclass "
            f"export --run runs/cls_vit_b16_s512m_bs16k --out "
            f"presets/cls_vit_b16_s512m_bs16k`); LiT locks that encoder."
        )
    scale = {}
    if config["loss"]["contrastive"] == "siglip":
        from keras_superclass.models.image_text import image_text_layers

        scale = dict(
            logit_scale_init=image_text_layers.SIGLIP_LOGIT_SCALE_INIT,
            logit_bias_init=image_text_layers.SIGLIP_LOGIT_BIAS_INIT,
        )
    task = ImageTextModel(
        backbone,
        text_encoder=text_encoder_arguments(config, preprocessor),
        embed_dim=model["embed_dim"],
        **scale,
        normalize_images=model["normalize_images"],
        preprocessor=preprocessor,
        compile=False,
    )
    if model["task"] == "lit":
        task.lock_image_tower(model["lock_image_unlocked_groups"])
    return task
