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
