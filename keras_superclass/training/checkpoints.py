"""Periodic, atomic training checkpoints and resume.

A checkpoint is `ckpt-{step:08d}.weights.h5` (model weights, the online IDF
statistics and the optimizer state, which holds the step and so the
learning-rate position) plus `ckpt-{step:08d}.json` (step, epoch and the
model config it belongs to). The JSON is written last: a checkpoint without
one is incomplete and ignored. Both are written to temporary files and
renamed, so a kill at any moment leaves the previous checkpoints intact.
"""

import glob
import json
import os
import re
import tempfile

import keras

from keras_superclass.utils.io import atomic_path
from keras_superclass.utils.io import atomic_write_json

_PATTERN = re.compile(r"ckpt-(\d{8})\.json$")


class CheckpointError(ValueError):
    """A checkpoint that is missing or belongs to another model."""


def _model_signature(model):
    """The parts of the model config a checkpoint must agree with."""
    config = model.get_config()
    backbone = config.get("backbone", {})
    if isinstance(backbone, dict):
        backbone = backbone.get("config", backbone)
    ignored = {"name", "trainable", "dtype", "remat", "dropout_rate"}
    signature = {
        f"backbone.{k}": v
        for k, v in sorted(backbone.items())
        if k not in ignored and not isinstance(v, dict)
    }
    for key in ("vocabulary_size", "head_mlp_layers"):
        if key in config:
            signature[key] = config[key]
    return json.loads(json.dumps(signature))


class CheckpointManager:
    """Writes, lists and restores checkpoints in one directory.

    Args:
        directory: where checkpoints go.
        keep: how many of the most recent checkpoints to keep.
    """

    def __init__(self, directory, keep=3):
        self.directory = os.fspath(directory)
        self.keep = int(keep)

    def _paths(self, step):
        stem = os.path.join(self.directory, f"ckpt-{step:08d}")
        return f"{stem}.weights.h5", f"{stem}.json"

    def steps(self):
        """Steps of the complete checkpoints, oldest first."""
        steps = []
        for path in glob.glob(os.path.join(self.directory, "ckpt-*.json")):
            match = _PATTERN.search(os.path.basename(path))
            if match and os.path.exists(self._paths(int(match.group(1)))[0]):
                steps.append(int(match.group(1)))
        return sorted(steps)

    def latest_step(self):
        steps = self.steps()
        return steps[-1] if steps else None

    def resolve_step(self, step=None):
        """`step` (default: the latest) if it has a complete checkpoint.

        Raises:
            CheckpointError: no checkpoint at all, or none at `step` (the
                message lists the steps there are).
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(
                f"{self.directory} holds no complete checkpoint (a run "
                f"writes one every training.steps_per_epoch steps). To "
                f"start a new run, train without --resume."
            )
        step = steps[-1] if step is None else int(step)
        if step not in steps:
            raise CheckpointError(
                f"{self.directory} has no checkpoint at step {step}; its "
                f"checkpoints are at steps {', '.join(map(str, steps))}."
            )
        return step

    def save(self, model, step, epoch, extra=None):
        """Saves a checkpoint of `model` at optimizer step `step`."""
        weights_path, meta_path = self._paths(step)
        os.makedirs(self.directory, exist_ok=True)
        # Keras needs the `.weights.h5` suffix on the temporary file too.
        with atomic_path(weights_path) as tmp:
            tmp_weights = f"{tmp}.weights.h5"
            try:
                model.save_weights(tmp_weights)
                os.replace(tmp_weights, tmp)
            finally:
                if os.path.exists(tmp_weights):
                    os.remove(tmp_weights)
        atomic_write_json(
            meta_path,
            {
                "step": int(step),
                "epoch": int(epoch),
                "model": _model_signature(model),
                **(extra or {}),
            },
        )
        for old in self.steps()[: -self.keep]:
            for path in self._paths(old):
                if os.path.exists(path):
                    os.remove(path)

    def restore(self, model, step=None):
        """Loads the latest (or given) checkpoint into a compiled model.

        Returns:
            The checkpoint's metadata dict (`step`, `epoch`, ...).

        Raises:
            CheckpointError: no checkpoint (at `step`), or one from another
                model.
        """
        step = self.resolve_step(step)
        weights_path, meta_path = self._paths(step)
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        expected = _model_signature(model)
        differences = [
            f"{key}: checkpoint {meta['model'].get(key)!r} vs model "
            f"{expected.get(key)!r}"
            for key in sorted(set(expected) | set(meta["model"]))
            if meta["model"].get(key) != expected.get(key)
        ]
        if differences:
            raise CheckpointError(
                f"Checkpoint {weights_path} was written by a different "
                f"model ({'; '.join(differences)}). Use the config it was "
                f"trained with, or a new checkpoint directory."
            )
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(weights_path)
        return meta


class CheckpointCallback(keras.callbacks.Callback):
    """Checkpoints at the end of every epoch (= `steps_per_epoch` steps).

    In a multi-process run every process saves (on JAX, reading global
    arrays is a collective step) but only the chief (`write=True`) keeps
    the files.
    """

    def __init__(self, manager, extra=None, write=True):
        super().__init__()
        self.manager = manager
        self.extra = extra or {}
        self.write = write

    def on_epoch_end(self, epoch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self.write:
            self.manager.save(self.model, step, epoch + 1, extra=self.extra)
            return
        if keras.backend.backend() != "jax":
            return  # torch.distributed / tf.distribute: nothing collective
        with tempfile.TemporaryDirectory() as scratch:
            self.model.save_weights(os.path.join(scratch, "w.weights.h5"))
