"""Export a trained task as a keras-hub preset directory."""

import os
import shutil

from keras_superclass.training.config import save_config


def export_preset(model, config, preset_dir, labeler=None):
    """Writes weights, configs, tokenizer assets and IDF statistics.

    `labeler` is the tokenizer (or CatLIP synset vocabulary) of the labels,
    so `keras-superclass predict` can print them as text. The directory
    loads with `keras_hub.models.Backbone.from_preset(dir)`
    (the encoder) or `SuperClassClassifier.from_preset(dir)` (the whole
    task with its IDF statistics) after `import keras_superclass`. It is
    written next to its final place and renamed, so a crash never leaves a
    half-written preset.
    """
    preset_dir = os.path.abspath(os.fspath(preset_dir))
    tmp_dir = f"{preset_dir}.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    # A copy compiled afresh, as `from_preset` builds it: the run's
    # optimizer state stays out of the preset (loading it into the fresh
    # optimizer of `from_preset` fails with a warning).
    fresh = type(model).from_config(model.get_config())
    fresh.set_weights(model.get_weights())
    fresh.save_to_preset(tmp_dir)
    if hasattr(labeler, "save_to_preset"):  # a tokenizer
        labeler.save_to_preset(tmp_dir)
    elif labeler is not None:  # a CatLIP synset vocabulary
        labeler.save(os.path.join(tmp_dir, "synset_vocabulary.json"))
    if config is not None:
        save_config(config, os.path.join(tmp_dir, "training_config.yaml"))
    if os.path.exists(preset_dir):
        shutil.rmtree(preset_dir)
    os.replace(tmp_dir, preset_dir)
    return preset_dir
