"""Shared handling of architecture presets and preset directories."""

import os


def resolve_preset(preset, presets, cls):
    """Looks `preset` up among a class's architecture presets.

    Returns the preset's dict for a known name, `None` for anything keras-hub
    loads itself (a directory, a `kaggle://` / `hf://` handle), and raises a
    `ValueError` listing the known names otherwise.
    """
    preset = os.fspath(preset)
    if preset in presets:
        return presets[preset]
    if "://" in preset or os.path.exists(preset):
        return None
    known = ", ".join(sorted(presets))
    raise ValueError(
        f"Unknown preset {preset!r} for {cls.__name__}. Known presets: "
        f"{known}; or pass a directory written by `save_to_preset()`."
    )


def build_task_from_preset(cls, config, kwargs, task_keys):
    """Builds `cls(backbone, ...)` from an architecture preset's dict.

    `kwargs` named in `task_keys` (plus `preprocessor`, `compile`, `name`)
    go to the task; every other keyword overrides the backbone config.
    """
    task_keys = set(task_keys) | {"preprocessor", "compile", "name"}
    task_kwargs = {k: v for k, v in kwargs.items() if k in task_keys}
    backbone_kwargs = {k: v for k, v in kwargs.items() if k not in task_keys}
    backbone = cls.backbone_cls(**{**config["backbone"], **backbone_kwargs})
    return cls(backbone, **{**config["task"], **task_kwargs})
