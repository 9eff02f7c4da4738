"""Export a trained task as a keras-hub preset directory."""

import os
import shutil

from keras_superclass.training.config import save_config
from keras_superclass.utils.io import atomic_write_json


def export_preset(model, config, preset_dir, extra_json=None):
    """Writes weights, configs, the preprocessor (tokenizer or synset
    vocabulary assets included) and IDF statistics, plus the training
    config as `training_config.yaml`. The directory
    loads with `keras_hub.models.Backbone.from_preset(dir)`
    (the encoder) or `SuperClassClassifier.from_preset(dir)` (the whole
    task with its IDF statistics) after `import keras_superclass`. It is
    written next to its final place and renamed, so a crash never leaves a
    half-written preset. `extra_json` (`{file name: object}`) adds JSON
    files, e.g. fine-tuning results, inside the same atomic write.
    """
    preset_dir = os.path.abspath(os.fspath(preset_dir))
    tmp_dir = f"{preset_dir}.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    model.save_to_preset(tmp_dir)
    if config is not None:
        save_config(config, os.path.join(tmp_dir, "training_config.yaml"))
    for name, value in (extra_json or {}).items():
        atomic_write_json(os.path.join(tmp_dir, name), value)
    if os.path.exists(preset_dir):
        shutil.rmtree(preset_dir)
    os.replace(tmp_dir, preset_dir)
    return preset_dir
