"""Checks of training config values and paths, run before anything is built.

Every error names the key and where its value came from: the YAML file,
the command line (overrides) or the defaults. `check_values` also turns
numbers that YAML read as strings (`5e-4`, `1e9`) into numbers.
"""

import os

from keras_superclass.distribution.config import RULES as DISTRIBUTION_RULES
from keras_superclass.training.config import ConfigError
from keras_superclass.training.config import _where


def where(config, key):
    """Where the value of dotted `key` came from, as a phrase."""
    return _where(config.get("origins", {}).get(key, "the defaults"))


def _fail(config, key, expected, value):
    raise ConfigError(
        f"'{key}' {where(config, key)} must be {expected}, got {value!r}."
    )


def _number(value):
    """`value` as an int or float, or None; YAML reads `5e-4` as a str."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _integer(value, minimum):
    number = _number(value)
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if not isinstance(number, int) or number < minimum:
        return None
    return number


def _text(value):
    if isinstance(value, str) and value:
        return value
    return None


def _loss_names():
    from keras_superclass.losses.multilabel_losses import MULTILABEL_LOSSES

    return sorted(MULTILABEL_LOSSES)


def _check_loss_name(value):
    """True for a name `get_multilabel_loss` accepts (aliases included)."""
    from keras_superclass.losses.multilabel_losses import get_multilabel_loss

    if value in _loss_names():
        return True
    try:
        get_multilabel_loss(value, 2)
    except (ValueError, TypeError):
        return False
    return True


def _check_dtype_policy(value):
    import keras

    try:
        keras.dtype_policies.get(value)
    except (ValueError, TypeError):
        return False
    return True


def _idf_modes():
    from keras_superclass.losses.superclass_loss import IDF_MODES

    return IDF_MODES


def _resize_methods():
    # Imported here: the rest of the config modules need no TensorFlow.
    from keras_superclass.data.transforms import RESIZE_METHODS

    return RESIZE_METHODS


# Rules: ("int", minimum), ("float", minimum), ("bool",), ("text",),
# ("choice", choices or a function returning them), ("check", function,
# what it expects). A trailing "?" allows null.
_RATE = ("float?", 0)
RULES = {
    "name": ("text",),
    "model.task": ("choice", ("superclass", "catlip", "lit", "clip")),
    "model.embed_dim": ("int", 1),
    "model.lock_image_unlocked_groups": ("int", 0),
    "loss.contrastive": ("choice", ("clip", "siglip")),
    "model.preset": ("text",),
    "model.vocabulary_size": ("int?", 1),
    "model.head_mlp_layers": ("int", 0),
    "model.normalize_images": ("bool",),
    "loss.name": (
        "check",
        _check_loss_name,
        lambda: f"one of {_loss_names()}",
    ),
    "loss.idf": ("choice", _idf_modes),
    "loss.document_frequencies": ("text?",),
    "data.train": ("globs?",),
    "data.tokenizer": ("text",),
    "data.synset_vocabulary": ("text?",),
    "data.max_labels": ("int", 1),
    "data.image_size": ("int", 1),
    "data.shuffle_buffer": ("int", 0),
    "data.strong_augment": ("bool",),
    "data.resize_method": ("choice", _resize_methods),
    "data.deterministic": ("bool",),
    "data.seed": ("int", 0),
    "training.global_batch_size": ("int", 1),
    "training.micro_batch_size": ("int?", 1),
    "training.total_steps": ("int?", 1),
    "training.samples_seen": ("int?", 1),
    "training.steps_per_epoch": ("int", 1),
    "training.learning_rate": _RATE,
    "training.warmup_steps": ("int?", 0),
    "training.weight_decay": _RATE,
    "training.beta_1": _RATE,
    "training.beta_2": _RATE,
    "training.epsilon": _RATE,
    "training.min_learning_rate_ratio": _RATE,
    "training.clipnorm": _RATE,
    "training.global_clipnorm": _RATE,
    "training.ema_momentum": _RATE,
    "training.dtype_policy": (
        "check",
        _check_dtype_policy,
        lambda: "a Keras dtype policy such as 'float32' or 'mixed_bfloat16'",
    ),
    "training.steps_per_execution": ("int", 1),
    "training.jit_compile": ("choice", (True, False, "auto")),
    "checkpoint.dir": ("text",),
    "checkpoint.keep": ("int", 1),
    "checkpoint.tensorboard": ("bool",),
    **DISTRIBUTION_RULES,
}


def _check_value(config, key, rule, value):
    """The value `rule` accepts (numbers parsed), else a ConfigError."""
    kind = rule[0].rstrip("?")
    if value is None and rule[0].endswith("?"):
        return None
    if kind == "int":
        number = _integer(value, rule[1])
        if number is None:
            _fail(config, key, f"an integer >= {rule[1]}", value)
        return number
    if kind == "float":
        number = _number(value)
        if number is None or number < rule[1]:
            _fail(config, key, f"a number >= {rule[1]} (e.g. 5e-4)", value)
        return float(number)
    if kind == "bool":
        if not isinstance(value, bool):
            _fail(config, key, "true or false", value)
        return value
    if kind == "text":
        if _text(value) is None:
            _fail(config, key, "a non-empty string", value)
        return value
    if kind == "globs":
        items = value if isinstance(value, list) else [value]
        if not items or any(_text(item) is None for item in items):
            _fail(config, key, "a file glob or a list of them", value)
        return value
    if kind == "choice":
        choices = rule[1]() if callable(rule[1]) else rule[1]
        # `True == 1`: compare types too, so `1` is not taken for `true`.
        if not any(type(value) is type(c) and value == c for c in choices):
            shown = ", ".join(
                str(c).lower() if isinstance(c, bool) else repr(c)
                for c in choices
            )
            _fail(config, key, f"one of {shown}", value)
        return value
    if not rule[1](value):  # "check"
        _fail(config, key, rule[2](), value)
    return value


def check_values(config):
    """Checks the type and range of every config value, in place."""
    for key, rule in RULES.items():
        section, name = key.split(".") if "." in key else (None, key)
        holder = config[section] if section else config
        holder[name] = _check_value(config, key, rule, holder[name])
    t = config["training"]
    micro = t["micro_batch_size"] or t["global_batch_size"]
    if t["global_batch_size"] % micro:
        raise ConfigError(
            f"'training.global_batch_size' ({t['global_batch_size']}) "
            f"{where(config, 'training.global_batch_size')} must be a "
            f"multiple of 'training.micro_batch_size' ({micro}) "
            f"{where(config, 'training.micro_batch_size')}."
        )
    if not (t["total_steps"] or t["samples_seen"]):
        raise ConfigError(
            f"Neither 'training.total_steps' nor 'training.samples_seen' is "
            f"set (config: {config.get('source', 'the defaults')}): the run "
            f"length is unknown."
        )


def _missing_shards(pattern):
    """An error text if `pattern` names no existing shard, else None."""
    import tensorflow as tf

    from keras_superclass.data.reader import list_shards

    try:
        files = list_shards(pattern)
    except FileNotFoundError:
        return "matches no shard files"
    missing = [f for f in files if not tf.io.gfile.exists(f)]
    if missing:
        return f"names missing files ({', '.join(missing[:3])})"
    return None


def _tokenizer_problem(name):
    from keras_superclass.data.tokenizers import TOKENIZER_CLASSES
    from keras_superclass.data.tokenizers.base import TOKENIZER_CONFIG_FILE

    if os.path.isdir(name):
        if os.path.isfile(os.path.join(name, TOKENIZER_CONFIG_FILE)):
            return None
        return f"is a directory without {TOKENIZER_CONFIG_FILE}"
    if name in TOKENIZER_CLASSES:
        return None
    return (
        f"is neither a tokenizer directory (from `keras-superclass vocab`) "
        f"nor one of {sorted(TOKENIZER_CLASSES)}"
    )


def check_paths(config, training=True):
    """Checks that the files and directories a run reads exist.

    Args:
        config: a dict from `load_config`.
        training: also check what only training reads (`data.train`,
            `loss.document_frequencies`); False for export.

    Raises:
        ConfigError: naming the key, its value and where it was set.
    """
    from keras_superclass.training.builders import known_presets

    def fail(key, problem, fix=""):
        value = config[key.split(".")[0]][key.split(".")[1]]
        raise ConfigError(
            f"'{key}' {where(config, key)} ({value!r}) {problem}.{fix}"
        )

    model, data, loss = config["model"], config["data"], config["loss"]
    if model["preset"] not in known_presets() and not os.path.isdir(
        model["preset"]
    ):
        fail(
            "model.preset",
            "is neither a known preset nor a directory",
            f" Known presets: {', '.join(known_presets())}.",
        )
    if model["task"] == "catlip":
        if not data["synset_vocabulary"]:
            fail(
                "data.synset_vocabulary",
                "is required for model.task 'catlip'",
                " Build one with `keras-superclass synsets`.",
            )
    else:
        problem = _tokenizer_problem(data["tokenizer"])
        if problem:
            fail("data.tokenizer", problem)
    vocabulary = data["synset_vocabulary"]
    if vocabulary and not os.path.isfile(vocabulary):
        fail("data.synset_vocabulary", "is not a file")
    if not training:
        return
    if not data["train"]:
        raise ConfigError(
            f"'data.train' is not set (config: {config.get('source')}). Set it "
            f"to the training shards' glob, e.g. on the command line: "
            f"data.train='shards/train/*.tfrecord'."
        )
    problem = _missing_shards(data["train"])
    if problem:
        fail(
            "data.train",
            problem,
            " Write shards with `keras-superclass shards` first.",
        )
    frequencies = loss["document_frequencies"]
    if loss["name"] == "softmax" and loss["idf"] == "fixed" and not frequencies:
        fail(
            "loss.idf",
            "needs 'loss.document_frequencies'",
            " Count them with `keras-superclass df`.",
        )
    if frequencies and not os.path.isfile(frequencies):
        fail(
            "loss.document_frequencies",
            "is not a file",
            " Count them with `keras-superclass df`.",
        )
