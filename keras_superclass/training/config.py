"""Training configs: small YAML files over a documented set of defaults.

A config names only what differs from `DEFAULTS`. Unknown or mistyped keys
and values of the wrong type are errors that name the key and where it was
set (the file or the command line), so a typo never silently falls back to
a default or fails later in training. Shipped configs live in
`keras_superclass/configs/` and can be named without a path
(`cls_vit_b16_s512m_bs16k`).
"""

import copy
import os

import yaml

from keras_superclass.distribution.config import DEFAULTS as DISTRIBUTION

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")

DEFAULTS = {
    "name": "run",
    "model": {
        # "superclass" (softmax token task), "catlip" (synset BCE task),
        # "lit" (locked image encoder + text tower) or "clip" (both towers
        # from scratch); lit/clip train with loss.contrastive.
        "task": "superclass",
        # Architecture preset name or a preset directory.
        "preset": "superclass_vit_b16",
        # Backbone config overrides (image_shape, remat, num_layers, ...).
        "backbone": {},
        # None: taken from the tokenizer (or the synset vocabulary).
        "vocabulary_size": None,
        "head_mlp_layers": 0,
        # Image-text tasks (lit, clip): the text tower's arguments
        # (hidden_dim, num_layers, num_heads, sequence_length, ...; the
        # vocabulary size comes from the tokenizer), the joint width, and
        # for lit the trailing image-tower groups left trainable (1: only
        # the image projection, as the reference LiT configs).
        "text_encoder": {},
        "embed_dim": 512,
        "lock_image_unlocked_groups": 1,
        # The reader ships uint8 pixels and the task normalises them on the
        # device (a quarter of the bytes, no host work); false: on the host.
        "normalize_images": True,
    },
    "loss": {
        # softmax (SuperClass), bce (CatLIP), asl, softmargin, twoway.
        "name": "softmax",
        # online | fixed | none, for the softmax loss.
        "idf": "online",
        "document_frequencies": None,
        "options": {},
        # Image-text tasks: "clip" (softmax) or "siglip" (sigmoid).
        "contrastive": "clip",
    },
    "data": {
        "train": None,  # TFRecord glob
        # clip | wordpiece | sentencepiece | word | a tokenizer preset dir.
        "tokenizer": "clip",
        # For CatLIP: a synset vocabulary JSON; labels from the shards.
        "synset_vocabulary": None,
        "max_labels": 64,
        "image_size": 224,
        "shuffle_buffer": 10000,
        "strong_augment": False,
        # Bicubic resize: pil (the reference's, exactly), antialias (pure
        # TensorFlow ops) or fast (TensorFlow, no antialiasing).
        "resize_method": "pil",
        "deterministic": False,
        "seed": 0,
    },
    "training": {
        "global_batch_size": 16384,
        # Batch per forward pass; global / micro = gradient accumulation.
        "micro_batch_size": None,
        # Length of the run: total_steps, or samples_seen / global batch.
        "total_steps": None,
        "samples_seen": None,
        # Steps between checkpoints, logs and progress-bar epochs.
        "steps_per_epoch": 1000,
        # Optimizer recipe; None keeps the task's own (SuperClass or CatLIP).
        "learning_rate": None,
        "warmup_steps": None,
        "weight_decay": None,
        "beta_1": None,
        "beta_2": None,
        "epsilon": None,
        "min_learning_rate_ratio": None,
        "clipnorm": None,
        "global_clipnorm": None,
        "ema_momentum": None,
        # float32 | mixed_bfloat16
        "dtype_policy": "float32",
        "steps_per_execution": 1,
        "jit_compile": "auto",
    },
    "checkpoint": {
        "dir": "runs/{name}",
        "keep": 3,
        "tensorboard": True,
    },
    # Devices and hosts: see keras_superclass/distribution/config.py.
    "distribution": copy.deepcopy(DISTRIBUTION),
}


# Sections holding constructor arguments rather than config keys.
FREE_FORM = ("backbone", "options", "text_encoder")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and file."""


def resolve_config_path(path_or_name):
    """A config path, or the path of a shipped config given by name."""
    if os.path.exists(path_or_name):
        return path_or_name
    for candidate in (path_or_name, f"{path_or_name}.yaml"):
        shipped = os.path.join(CONFIG_DIR, candidate)
        if os.path.exists(shipped):
            return shipped
    names = sorted(
        f[: -len(".yaml")]
        for f in os.listdir(CONFIG_DIR)
        if f.endswith(".yaml")
    )
    raise FileNotFoundError(
        f"No config file {path_or_name!r}. Pass a YAML path or one of the "
        f"shipped configs: {', '.join(names)}."
    )


# Keys users look for that are not settings here, and what to do instead.
_NOT_CONFIG_KEYS = {
    "data.validation": (
        " Pretraining runs no validation pass here: "
        "evaluate a run with `keras-superclass export` and then `probe` "
        "(or `zeroshot` / `retrieval` after LiT) on held-out data."
    ),
}


def _where(source):
    """`source` (a file, "the command line", ...) as a phrase."""
    if source == "the command line":
        return "on the command line"
    return f"in {source}"


def _merge(base, update, source, origins, prefix=""):
    """Merges `update` into `base`, noting in `origins` where keys came
    from."""
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(
                f"Unknown config key '{dotted}' {_where(source)}. Known "
                f"keys here: {known}.{_NOT_CONFIG_KEYS.get(dotted, '')}"
            )
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"Config key '{dotted}' {_where(source)} must be a "
                    f"mapping, got {type(value).__name__}."
                )
            if key in FREE_FORM:  # arguments passed through: any key
                base[key].update(value)
                origins.update({f"{dotted}.{k}": source for k in value})
            else:
                _merge(base[key], value, source, origins, f"{dotted}.")
        else:
            base[key] = value
            origins[dotted] = source


def _parse_override(text, source="the command line"):
    if "=" not in text:
        raise ConfigError(
            f"Override {text!r} from {source} must look like "
            f"'section.key=value', e.g. 'training.total_steps=100'."
        )
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        value = raw  # e.g. an unbalanced bracket: checked as a string
    nested = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def load_config(path_or_name=None, overrides=(), base=None):
    """Reads a YAML config over `DEFAULTS` and applies overrides.

    Args:
        path_or_name: YAML file or shipped config name; None for defaults.
        overrides: `"section.key=value"` strings (values parsed as YAML) or
            dicts, applied in order.
        base: a dict to use instead of `DEFAULTS`.

    Returns:
        The full config as a nested dict with derived entries filled in
        (`training.total_steps`, `training.accumulation_steps`,
        `checkpoint.dir`), numbers YAML read as strings (`5e-4`) parsed,
        plus `source` (the file) and `origins` (dotted key -> the file,
        "the command line" or "the overrides") for error messages.

    Raises:
        ConfigError: an unknown key, or a value of the wrong type or
            range; the message names the key and where it was set. Paths
            are checked later, by `config_checks.check_paths` (`train`
            calls it before building anything).
    """
    from keras_superclass.training.config_checks import check_values
    from keras_superclass.training.config_checks import where

    config = copy.deepcopy(base or DEFAULTS)
    source = "the defaults"
    origins = {}
    if path_or_name is not None:
        source = resolve_config_path(path_or_name)
        with open(source, encoding="utf-8") as f:
            try:
                loaded = yaml.safe_load(f) or {}
            except yaml.YAMLError as error:
                raise ConfigError(
                    f"{source} is not valid YAML: {error}"
                ) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source} must hold a mapping of sections.")
        _merge(config, loaded, source, origins)
    for override in overrides:
        if isinstance(override, str):
            override = _parse_override(override)
            _merge(config, override, "the command line", origins)
        else:
            _merge(config, override, "the overrides", origins)
    config["source"] = source
    config["origins"] = origins
    check_values(config)
    t = config["training"]
    micro = t["micro_batch_size"] or t["global_batch_size"]
    t["micro_batch_size"] = micro
    t["accumulation_steps"] = t["global_batch_size"] // micro
    if not t["total_steps"]:
        t["total_steps"] = t["samples_seen"] // t["global_batch_size"]
        if not t["total_steps"]:
            raise ConfigError(
                f"'training.samples_seen' ({t['samples_seen']}) "
                f"{where(config, 'training.samples_seen')} is less than one "
                f"global batch ({t['global_batch_size']})."
            )
    if t["total_steps"] % t["steps_per_epoch"]:
        divisors = [
            d
            for d in range(1, t["steps_per_epoch"] + 1)
            if t["total_steps"] % d == 0
        ]
        raise ConfigError(
            f"'training.steps_per_epoch' ({t['steps_per_epoch']}) "
            f"{where(config, 'training.steps_per_epoch')} must divide the "
            f"{t['total_steps']} training steps (checkpoints fall on epoch "
            f"ends); e.g. use {divisors[-1]}."
        )
    try:
        config["checkpoint"]["dir"] = config["checkpoint"]["dir"].format(
            name=config["name"]
        )
    except (KeyError, IndexError, ValueError) as error:
        raise ConfigError(
            f"'checkpoint.dir' {where(config, 'checkpoint.dir')} "
            f"({config['checkpoint']['dir']!r}) may hold only '{{name}}' in "
            f"braces ({type(error).__name__}: {error})."
        ) from None
    return config


def save_config(config, path):
    """Writes a config as YAML (atomically), without derived entries."""
    from keras_superclass.utils.io import atomic_write_text

    config = copy.deepcopy(config)
    config.pop("source", None)
    config.pop("origins", None)
    config["training"].pop("accumulation_steps", None)
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
