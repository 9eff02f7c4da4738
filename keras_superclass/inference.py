"""Predict the labels (caption tokens or synsets) of image files."""

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


def predict_files(preset_or_task, paths, top_k=10):
    """The `top_k` labels of each image file, as words with scores.

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
    if isinstance(task, str):
        task = load_task(task)
    if not hasattr(task, "predict_labels"):
        raise ValueError(
            f"{type(task).__name__} predicts class ids, not caption labels; "
            f"`predict` needs a SuperClass or CatLIP task preset."
        )
    images = read_images(paths)
    if not images:
        return []
    return task.predict_labels(images, top_k=top_k)
