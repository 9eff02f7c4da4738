"""The model path (task, backbone, layers, losses) needs no TensorFlow."""

import os
import subprocess
import sys
import textwrap

import keras
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh interpreter in which TensorFlow can be neither imported
# nor found: trains one tiny step and checks the preprocessors say why
# they are unavailable.
_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    # Keras first: the torch backend probes packages with `find_spec` at
    # import, which a blocking finder would break.
    import keras


    class BlockTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tensorflow_text"):
                raise ModuleNotFoundError(f"{name} is blocked", name=name)
            return None


    sys.meta_path.insert(0, BlockTensorFlow())
    import numpy as np

    import keras_superclass
    from keras_superclass import layers
    from keras_superclass import models
    from keras_superclass.models import SuperClassClassifier

    model = SuperClassClassifier.from_preset(
        "superclass_vit_ti16",
        image_shape=(16, 16, 3),
        num_layers=1,
        vocabulary_size=64,
        normalize_images=True,
        preprocessor=None,
    )
    ids = np.array([[1, 2, -1], [3, -1, -1]], "int32")
    images = np.zeros((2, 16, 16, 3), "uint8")
    loss = model.train_on_batch(images, ids, return_dict=True)["loss"]
    assert np.isfinite(loss), loss
    for module, name in (
        (models, "SuperClassPreprocessor"),
        (layers, "SuperClassImageConverter"),
    ):
        try:
            getattr(module, name)
        except ImportError as error:
            assert "needs TensorFlow" in str(error), error
        else:
            raise SystemExit(f"{name} imported without TensorFlow")
    assert "tensorflow" not in sys.modules
    print("ok")
    """
)


@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow",
    reason="the tensorflow backend needs TensorFlow itself",
)
def test_model_path_imports_and_trains_without_tensorflow():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO, env.get("PYTHONPATH")) if p
    )
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "ok"
