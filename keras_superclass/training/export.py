"""Export a trained task as a keras-hub preset directory."""

import os
import shutil

from keras_superclass.utils.io import atomic_write_json


def export_preset(model, config, preset_dir, tokenizer=None):
    """Writes weights, configs, tokenizer assets and IDF statistics.

    The directory loads with `keras_hub.models.Backbone.from_preset(dir)`
    (the encoder) or `SuperClassClassifier.from_preset(dir)` (the whole
    task with its IDF statistics) after `import keras_superclass`. It is
    written next to its final place and renamed, so a crash never leaves a
    half-written preset.
    """
    preset_dir = os.path.abspath(os.fspath(preset_dir))
    tmp_dir = f"{preset_dir}.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    model.save_to_preset(tmp_dir)
    if tokenizer is not None:
        tokenizer.save_to_preset(tmp_dir)
    if config is not None:
        atomic_write_json(
            os.path.join(tmp_dir, "training_config.json"),
            {k: v for k, v in config.items() if k != "source"},
        )
    if os.path.exists(preset_dir):
        shutil.rmtree(preset_dir)
    os.replace(tmp_dir, preset_dir)
    return preset_dir
