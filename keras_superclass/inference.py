"""Predict the labels (caption tokens, synsets or classes) of image files."""

import os


def load_task(preset):
    """Loads any task preset of this package (SuperClass, CatLIP, CRU-Net).

    Args:
        preset: a directory written by `save_to_preset` or
            `keras-superclass export`.
    """
    import keras_superclass  # noqa: F401  (registers the classes)
    from keras_superclass.models.multilabel_classifier import PresetTask

    return PresetTask.from_preset(preset)


def read_images(paths):
    """Decodes image files (JPEG, PNG, GIF, BMP, WebP) to uint8 RGB arrays.

    Raises:
        FileNotFoundError: naming the files that do not exist.
        ValueError: naming the first file that is not a decodable image.
    """
    import tensorflow as tf

    from keras_superclass.data import transforms

    check_files_exist(paths)
    images = []
    for path in paths:
        encoded = tf.io.read_file(path)
        try:
            images.append(transforms.decode_rgb(encoded).numpy())
        except tf.errors.InvalidArgumentError:
            raise ValueError(
                f"{path} is not a decodable image (JPEG, PNG, GIF, BMP or "
                f"WebP)."
            ) from None
    return images


def check_files_exist(paths):
    """Raises `FileNotFoundError` listing the paths that are not files."""
    missing = [os.fspath(p) for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} image files do not exist: "
            f"{shown}. Check the paths (relative to {os.getcwd()})."
        )


def preset_class_names(preset):
    """Class names a fine-tuned classifier preset holds, or `None`.

    `keras-superclass finetune` (and `finetune(..., out=)`) writes them,
    in class-id order, to the preset's results file.
    """
    import json

    from keras_superclass.training.finetune import RESULTS_FILE

    path = os.path.join(os.fspath(preset), RESULTS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("class_names")


def predict_classes(task, images, top_k=5, class_names=None):
    """The `top_k` classes of raw images under an image classifier.

    Args:
        task: a `SuperClassImageClassifier` or `CRUNetImageClassifier`
            with its preprocessor.
        images: uint8 images: a `(B, H, W, 3)` batch or a list of
            `(H, W, 3)` images of any sizes.
        top_k: classes per image.
        class_names: names in class-id order; `None` reports the ids.

    Returns:
        One list per image of `{"label": str, "score": float}`, best
        first; scores are softmax probabilities for a logits head.
    """
    import keras
    import numpy as np

    if task.preprocessor is None:
        raise ValueError(
            "This classifier has no preprocessor to prepare raw images: "
            "load a preset saved with one, or set `task.preprocessor`."
        )
    if class_names is not None and len(class_names) != task.num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a classifier of "
            f"{task.num_classes} classes; give one name per class."
        )
    names = class_names or [str(i) for i in range(task.num_classes)]
    batch = task.preprocessor.image_converter(images)
    scores = keras.ops.convert_to_tensor(task.predict(batch, verbose=0))
    if task.activation is None:  # logits
        scores = keras.ops.softmax(scores, axis=-1)
    scores = keras.ops.convert_to_numpy(scores)
    return [
        [
            {"label": str(names[i]), "score": float(row[i])}
            for i in np.argsort(-row, kind="stable")[:top_k]
        ]
        for row in scores
    ]


def predict_files(preset_or_task, paths, top_k=10):
    """The `top_k` labels of each image file, as words with scores.

    Caption tokens (SuperClass) or synsets (CatLIP) for a pretraining
    task; classes, named as in fine-tuning, for an image classifier.

    Args:
        preset_or_task: a task preset directory or a loaded task.
        paths: image files.
        top_k: labels per image.

    Returns:
        One list per file of `{"label": str, "score": float}`.

    Example (skipped as a doctest: needs a trained preset and image files):
    >>> predict_files("my_preset", ["cat.jpg"], top_k=3)  # doctest: +SKIP
    [[{'label': 'cat', 'score': 0.41}, ...]]
    """
    check_files_exist(paths)  # before the model loads
    task = preset_or_task
    if isinstance(task, str | os.PathLike):
        task = load_task(task)
    if hasattr(task, "predict_labels"):
        predict = task.predict_labels
    elif hasattr(task, "num_classes"):
        class_names = None
        if task is not preset_or_task:
            class_names = preset_class_names(preset_or_task)

        def predict(images, top_k):
            return predict_classes(task, images, top_k, class_names)

    else:
        raise ValueError(
            f"{type(task).__name__} is neither a pretraining task nor an "
            f"image classifier; `predict` cannot name its outputs."
        )
    images = read_images(paths)
    return predict(images, top_k=top_k) if images else []
