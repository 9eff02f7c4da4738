"""Training configs: small YAML files over a documented set of defaults.

A config names only what differs from `DEFAULTS`. Unknown or mistyped keys
are errors that name the key and the file, so a typo never silently falls
back to a default. Shipped configs live in `keras_superclass/configs/` and
can be named without a path (`cls_vit_b16_s512m_bs16k`).
"""

import copy
import os

import yaml

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")

DEFAULTS = {
    "name": "run",
    "model": {
        # "superclass" (softmax token task) or "catlip" (synset BCE task).
        "task": "superclass",
        # Architecture preset name or a preset directory.
        "preset": "superclass_vit_b16",
        # Backbone config overrides (image_shape, remat, num_layers, ...).
        "backbone": {},
        # None: taken from the tokenizer (or the synset vocabulary).
        "vocabulary_size": None,
        "head_mlp_layers": 0,
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
    },
    "data": {
        "train": None,  # TFRecord glob
        "validation": None,
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
}


# Sections holding constructor arguments rather than config keys.
FREE_FORM = ("backbone", "options")


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


def _merge(base, update, source, prefix=""):
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(
                f"Unknown config key '{dotted}' in {source}. Known keys "
                f"here: {known}."
            )
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"Config key '{dotted}' in {source} must be a mapping, "
                    f"got {type(value).__name__}."
                )
            if key in FREE_FORM:  # arguments passed through: any key
                base[key].update(value)
            else:
                _merge(base[key], value, source, prefix=f"{dotted}.")
        else:
            base[key] = value


def _parse_override(text, source="the command line"):
    if "=" not in text:
        raise ConfigError(
            f"Override {text!r} from {source} must look like "
            f"'section.key=value', e.g. 'training.total_steps=100'."
        )
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw else None
    nested = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def _check_types(config, source):
    t = config["training"]
    for key in ("global_batch_size", "steps_per_epoch", "warmup_steps"):
        if t[key] is None and key == "warmup_steps":
            continue
        if not isinstance(t[key], int) or t[key] < 0:
            raise ConfigError(
                f"'training.{key}' in {source} must be a non-negative "
                f"integer, got {t[key]!r}."
            )
    micro = t["micro_batch_size"] or t["global_batch_size"]
    if t["global_batch_size"] % micro:
        raise ConfigError(
            f"'training.global_batch_size' ({t['global_batch_size']}) in "
            f"{source} must be a multiple of 'training.micro_batch_size' "
            f"({micro})."
        )
    if not (t["total_steps"] or t["samples_seen"]):
        raise ConfigError(
            f"{source} sets neither 'training.total_steps' nor "
            f"'training.samples_seen': the run length is unknown."
        )
    if config["model"]["task"] not in ("superclass", "catlip"):
        raise ConfigError(
            f"'model.task' in {source} must be 'superclass' or 'catlip', "
            f"got {config['model']['task']!r}."
        )
    # Imported here: the rest of the config module needs no TensorFlow.
    from keras_superclass.data.transforms import RESIZE_METHODS as methods

    if config["data"]["resize_method"] not in methods:
        raise ConfigError(
            f"'data.resize_method' in {source} must be one of {methods}, "
            f"got {config['data']['resize_method']!r}."
        )


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
        `checkpoint.dir`).
    """
    config = copy.deepcopy(base or DEFAULTS)
    source = "the defaults"
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
        _merge(config, loaded, source)
    for override in overrides:
        if isinstance(override, str):
            override = _parse_override(override)
        _merge(config, override, "the overrides")
    _check_types(config, source)
    t = config["training"]
    micro = t["micro_batch_size"] or t["global_batch_size"]
    t["micro_batch_size"] = micro
    t["accumulation_steps"] = t["global_batch_size"] // micro
    if not t["total_steps"]:
        t["total_steps"] = int(t["samples_seen"]) // t["global_batch_size"]
    if t["total_steps"] % t["steps_per_epoch"]:
        divisors = [
            d
            for d in range(1, t["steps_per_epoch"] + 1)
            if t["total_steps"] % d == 0
        ]
        raise ConfigError(
            f"'training.steps_per_epoch' ({t['steps_per_epoch']}) in {source} "
            f"must divide the {t['total_steps']} training steps (checkpoints "
            f"fall on epoch ends); e.g. use {divisors[-1]}."
        )
    config["checkpoint"]["dir"] = config["checkpoint"]["dir"].format(
        name=config["name"]
    )
    config["source"] = source
    return config


def save_config(config, path):
    """Writes a config as YAML (atomically), without derived entries."""
    from keras_superclass.utils.io import atomic_write_text

    config = copy.deepcopy(config)
    config.pop("source", None)
    config["training"].pop("accumulation_steps", None)
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
