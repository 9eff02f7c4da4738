"""Architecture presets and preset directories of the tasks."""

import difflib
import inspect
import json
import os

import keras

TASK_CONFIG_FILE = "task.json"
BACKBONE_CONFIG_FILE = "config.json"
BACKBONE_WEIGHTS_FILE = "model.weights.h5"
TASK_WEIGHTS_FILE = "task.weights.h5"
# Keywords every task takes besides its own arguments.
COMMON_TASK_KEYS = ("preprocessor", "compile", "name")


def resolve_preset(preset, presets, cls):
    """Looks `preset` up among a class's architecture presets.

    Returns the preset's dict for a known name, `None` for a directory, and
    raises a `ValueError` listing the known names otherwise.
    """
    preset = os.fspath(preset)
    if preset in presets:
        return presets[preset]
    if os.path.isdir(preset):
        return None
    names = (
        f"{cls.__name__}'s architecture presets are "
        f"{', '.join(sorted(presets))}. "
        if presets
        else ""
    )
    raise ValueError(
        f"Unknown preset {preset!r}: no such architecture preset or "
        f"directory. {names}A preset directory is one written by "
        f"`save_to_preset()` (`keras-superclass export`, `finetune --out`)."
        f"{did_you_mean(preset, presets)}"
    )


def did_you_mean(preset, presets):
    """` Did you mean 'x'?` for a near miss among the names and the
    directories beside `preset`, else an empty string."""
    preset = os.fspath(preset)
    parent, name = os.path.split(preset)
    try:
        folders = [
            entry
            for entry in os.listdir(parent or ".")
            if os.path.isdir(os.path.join(parent or ".", entry))
        ]
    except OSError:
        folders = []
    close = difflib.get_close_matches(name, [*presets, *folders], n=1)
    if not close:
        return ""
    found = close[0] if close[0] in presets else os.path.join(parent, close[0])
    return f" Did you mean {found!r}?"


def init_arguments(cls):
    """Names of the keyword arguments `cls.__init__` declares."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name
        for p in parameters
        if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


# What Keras itself passes a functional model (`from_config`, `clone`).
_KERAS_MODEL_KEYS = {"name", "trainable", "dtype"}


def check_model_kwargs(model_cls, kwargs):
    """Refuses keywords `model_cls` does not take.

    Keras's functional models accept and drop any keyword, so a misspelt
    one (`hidden_size=` for `hidden_dim=`) would silently build a model
    with the default instead.
    """
    unknown = sorted(set(kwargs) - _KERAS_MODEL_KEYS)
    if unknown:
        known = sorted(init_arguments(model_cls) | _KERAS_MODEL_KEYS)
        raise TypeError(
            f"{model_cls.__name__} got unknown argument(s) {unknown}; it "
            f"takes {known}."
        )


def split_preset_kwargs(cls, backbone_cls, kwargs):
    """`from_preset` keywords -> (task, preprocessor, backbone) keywords.

    Raises a `ValueError` naming every keyword that none of them takes, so
    a misspelt argument never builds a different model silently.
    """
    task_keys = set(cls.task_arguments) | set(COMMON_TASK_KEYS)
    preprocessor_keys = set(getattr(cls, "preprocessor_arguments", ()))
    backbone_keys = init_arguments(backbone_cls) | {"dtype"}
    unknown = sorted(
        set(kwargs) - task_keys - preprocessor_keys - backbone_keys
    )
    if unknown:
        raise ValueError(
            f"{cls.__name__}.from_preset() got unknown argument(s) "
            f"{unknown}. Task arguments: {sorted(task_keys)}; preprocessing: "
            f"{sorted(preprocessor_keys)}; backbone "
            f"({backbone_cls.__name__}): {sorted(backbone_keys)}."
        )

    def pick(keys):
        return {k: v for k, v in kwargs.items() if k in keys}

    return (
        pick(task_keys),
        pick(preprocessor_keys - task_keys),
        pick(backbone_keys - task_keys - preprocessor_keys),
    )


def build_task_from_preset(cls, config, kwargs):
    """Builds `cls(backbone, ...)` from an architecture preset's dict, with
    the class's default preprocessor unless `preprocessor=` is given."""
    task_kwargs, options, backbone_kwargs = split_preset_kwargs(
        cls, cls.backbone_cls, kwargs
    )
    backbone = cls.backbone_cls(**{**config["backbone"], **backbone_kwargs})
    task_kwargs = {**config["task"], **task_kwargs}
    if "preprocessor" not in task_kwargs:
        task_kwargs["preprocessor"] = cls.default_preprocessor(
            backbone, task_kwargs, options
        )
    return cls(backbone, **task_kwargs)


def _read_task_config(cls, preset):
    path = os.path.join(preset, TASK_CONFIG_FILE)
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(preset, BACKBONE_CONFIG_FILE)):
            raise ValueError(
                f"{preset} holds an encoder preset without a task "
                f"({TASK_CONFIG_FILE}). Load the encoder with "
                f"`keras_hub.models.Backbone.from_preset({preset!r})`, or "
                f"build a task around it: `{cls.__name__}(backbone, ...)`."
            )
        raise FileNotFoundError(
            f"{preset} is not a preset directory (no {TASK_CONFIG_FILE}): "
            f"write one with `save_to_preset()` or `keras-superclass export`."
        )
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    saved_cls = keras.saving.get_registered_object(config["registered_name"])
    if saved_cls is None or not issubclass(saved_cls, cls):
        raise ValueError(
            f"{preset} holds a {config['registered_name']} preset, not a "
            f"{cls.__name__}: load it with that class's `from_preset`."
        )
    return config, saved_cls


def load_task_preset(cls, preset, load_weights, kwargs):
    """Loads a task from a preset directory (`save_to_preset` layout).

    Uses public Keras and keras-hub pieces only: the task config is
    deserialised in Keras safe mode, the preprocessor loads its assets
    (`load_preset_assets`) and the weights load without optimizer state.
    Task weights are not loaded when a keyword changes the head's shape.
    """
    preset = os.fspath(preset)
    config, saved_cls = _read_task_config(cls, preset)
    backbone_config = config["config"]["backbone"]
    backbone_cls = keras.saving.get_registered_object(
        backbone_config["registered_name"]
    )
    task_kwargs, options, backbone_kwargs = split_preset_kwargs(
        saved_cls, backbone_cls, kwargs
    )
    if options:
        raise ValueError(
            f"{sorted(options)} describe a new preprocessor; a preset "
            f"directory carries its own. Pass `preprocessor=` to replace it."
        )
    backbone_config["config"].update(backbone_kwargs)
    config["config"].update(task_kwargs)
    task = keras.saving.deserialize_keras_object(config, safe_mode=True)
    if task.preprocessor is not None and "preprocessor" not in task_kwargs:
        task.preprocessor.load_preset_assets(preset)
    if load_weights:
        task.backbone.load_weights(os.path.join(preset, BACKBONE_WEIGHTS_FILE))
        reshaped = set(task_kwargs) & set(cls.head_arguments)
        task_weights = os.path.join(preset, TASK_WEIGHTS_FILE)
        if os.path.exists(task_weights) and not reshaped:
            task.load_task_weights(task_weights)
    return task


def preset_image_converter(preset, encoder, image_size=None):
    """The image converter of a task preset, else a plain one.

    A task preset prepares images the way its training did (its
    preprocessor's converter, resized to `image_size` if given); an encoder
    alone or an architecture name gets the evaluation transform with the
    OpenAI normalisation. Either way the converter normalises: `encoder`
    takes normalised images (used by `probe` and the fine-tuning task).
    """
    from keras_superclass.data.image_converter import SuperClassImageConverter

    config_path = os.path.join(os.fspath(preset), "image_converter.json")
    if os.path.isfile(config_path):
        import json

        import keras

        with open(config_path, encoding="utf-8") as f:
            converter = keras.saving.deserialize_keras_object(json.load(f))
        config = converter.get_config()
        config.update(normalize=True)  # the encoder takes normalised input
        if image_size is not None:
            config.update(image_size=image_size)
        return SuperClassImageConverter.from_config(config)
    shape = tuple(getattr(encoder, "image_shape", None) or ())[:2]
    size = image_size or (shape[0] if shape and None not in shape else 224)
    return SuperClassImageConverter(size, normalize=True)
