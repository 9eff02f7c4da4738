"""Features of a frozen image encoder, for the evaluation protocols."""

import math

import keras
import numpy as np


def resolve_encoder(encoder):
    """Returns the image encoder of a `Backbone` or of a task.

    A task (e.g. `SuperClassClassifier`) is reduced to its `.backbone`: the
    evaluation protocols drop the head and keep the encoder.
    """
    backbone = getattr(encoder, "backbone", None)
    if isinstance(backbone, keras.Model):
        return backbone
    if isinstance(encoder, keras.Model):
        return encoder
    raise ValueError(
        f"Expected a Keras image encoder (a `keras_hub.models.Backbone` or a "
        f"task with a `.backbone`), got {type(encoder).__name__}."
    )


class _FeatureModel(keras.Model):
    """Runs an encoder in inference mode and returns one output."""

    def __init__(self, encoder, output_key, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.output_key = output_key

    def call(self, images):
        outputs = self.encoder(images, training=False)
        if isinstance(outputs, dict):
            if self.output_key not in outputs:
                raise ValueError(
                    f"The encoder's outputs have no {self.output_key!r}; "
                    f"available: {sorted(outputs)}. Pass `output_key=`."
                )
            outputs = outputs[self.output_key]
        return outputs


class FeatureExtractor:
    """Computes `(features, labels)` of labelled images with a frozen encoder.

    The encoder runs through Keras' compiled predict function (jitted on JAX,
    a `tf.function` on TensorFlow, `no_grad` on PyTorch). Every batch is
    padded to the size of the first one, so a short last batch does not
    compile a second function. One extractor can serve several splits.

    Args:
        encoder: a `keras_hub.models.Backbone` whose outputs hold
            `output_key`, or a task with a `.backbone`.
        output_key: the output used as the representation.

    Example:
    >>> from keras_superclass.models import SuperClassBackbone
    >>> backbone = SuperClassBackbone(image_shape=(32, 32, 3), patch_size=8,
    ...     num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
    >>> extractor = FeatureExtractor(backbone)
    >>> features, labels = extractor(np.zeros((5, 32, 32, 3)), np.arange(5))
    >>> features.shape, labels.tolist()
    ((5, 32), [0, 1, 2, 3, 4])
    """

    def __init__(self, encoder, output_key="pooled_output"):
        self.encoder = resolve_encoder(encoder)
        self.output_key = output_key
        self.model = _FeatureModel(
            self.encoder, output_key, name="feature_extractor"
        )
        self._batch_size = None

    def _predict(self, images):
        images = np.asarray(images, dtype="float32")
        size = images.shape[0]
        if self._batch_size is None:
            self._batch_size = size
        if size < self._batch_size:
            pad = [(0, self._batch_size - size)] + [(0, 0)] * (images.ndim - 1)
            images = np.pad(images, pad)
        features = self.model.predict_on_batch(images)
        return np.asarray(features, dtype="float32")[:size]

    def __call__(self, data, labels=None, batch_size=256, verbose=False):
        """See `extract_features`."""
        batches, steps = _as_batches(data, labels, batch_size)
        progbar = (
            keras.utils.Progbar(steps, unit_name="batch") if verbose else None
        )
        all_features, all_labels = [], []
        batches_read = 0
        for batch in batches:
            batches_read += 1
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError(
                    "Each batch must be `(images, integer_labels)`; got "
                    f"{type(batch).__name__}."
                )
            images, batch_labels = batch[0], batch[1]
            images = _to_numpy(images)
            batch_labels = _to_numpy(batch_labels).reshape(-1)
            if images.shape[0] != batch_labels.shape[0]:
                raise ValueError(
                    f"A batch holds {images.shape[0]} images but "
                    f"{batch_labels.shape[0]} labels; labels must be one "
                    "integer per image."
                )
            if images.shape[0] == 0:
                continue
            all_features.append(self._predict(images))
            all_labels.append(check_integer_labels(batch_labels))
            if progbar is not None:
                progbar.update(batches_read)
        if progbar is not None:  # ends the line when the length was unknown
            progbar.update(batches_read, finalize=True)
        if not all_features:
            raise ValueError(
                "The dataset is empty: no images to extract features from. "
                "Check the data path (and any filtering or `take()`)."
            )
        return (
            np.concatenate(all_features, axis=0),
            np.concatenate(all_labels, axis=0),
        )


def extract_features(
    encoder,
    data,
    labels=None,
    batch_size=256,
    verbose=False,
    output_key="pooled_output",
):
    """Runs a frozen encoder over labelled images.

    Args:
        encoder: a `keras_hub.models.Backbone` whose output dict holds
            `output_key` (`"pooled_output"`, `(B, D)`), or a task with a
            `.backbone` (the head is ignored).
        data: a `tf.data.Dataset` (or any iterable) of `(images, labels)`
            batches with float images `(B, H, W, 3)` already normalised and
            integer labels `(B,)`; or NumPy images `(N, H, W, 3)` with
            `labels`, or an `(images, labels)` tuple of arrays.
        labels: integer labels `(N,)` when `data` is an image array.
        batch_size: batch size for array inputs (datasets keep theirs).
        verbose: show a Keras progress bar.
        output_key: the encoder output used as the representation.

    Returns:
        `(features, labels)`: `float32 (N, D)` and `int64 (N,)`.

    Example:
    >>> from keras_superclass.models import SuperClassBackbone
    >>> backbone = SuperClassBackbone(image_shape=(32, 32, 3), patch_size=8,
    ...     num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
    >>> images, labels = np.zeros((6, 32, 32, 3)), np.arange(6) % 2
    >>> dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    >>> features, labels = extract_features(backbone, dataset.batch(4))
    >>> features.shape, labels.shape
    ((6, 32), (6,))
    """
    extractor = FeatureExtractor(encoder, output_key=output_key)
    return extractor(data, labels, batch_size=batch_size, verbose=verbose)


def check_integer_labels(labels, name="labels"):
    """Returns `labels` as `int64 (N,)`; rejects non-integer or negative."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        labels = labels.reshape(-1)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        rounded = np.round(labels)
        if not np.all(rounded == labels):
            raise ValueError(
                f"`{name}` must be integer class ids, got values such as "
                f"{labels[rounded != labels][:3].tolist()}. One-hot or soft "
                "labels are not supported: pass `argmax` of them."
            )
        labels = rounded
    labels = labels.astype("int64")
    if labels.size and labels.min() < 0:
        raise ValueError(
            f"`{name}` must be non-negative class ids, got {labels.min()}."
        )
    return labels


def check_features(features, labels, name):
    """Validates a `(features (N, D), labels (N,))` pair; returns both."""
    features = np.asarray(features, dtype="float32")
    if features.ndim != 2:
        raise ValueError(
            f"`{name}` features must be 2-D (N, D), got shape {features.shape}."
        )
    labels = check_integer_labels(labels, name=f"{name} labels")
    if features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"`{name}`: {features.shape[0]} feature rows but "
            f"{labels.shape[0]} labels; they must match one to one."
        )
    if features.shape[0] == 0:
        raise ValueError(f"`{name}` is empty: no examples to evaluate.")
    if not np.all(np.isfinite(features)):
        raise ValueError(
            f"`{name}` features contain NaN or infinite values; check the "
            "encoder's weights and the input normalisation."
        )
    return features, labels


def check_same_dimension(train_features, test_features):
    """Both splits must come from one encoder: the same feature size."""
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"Train features have {train_features.shape[1]} dimensions but "
            f"test features {test_features.shape[1]}; extract both with the "
            "same encoder."
        )


def check_train_and_test(
    train_features, train_labels, test_features, test_labels
):
    """`check_features` on both splits, then `check_same_dimension`.

    Returns `(train_features, train_labels, test_features, test_labels)`.
    """
    train_features, train_labels = check_features(
        train_features, train_labels, "train"
    )
    test_features, test_labels = check_features(
        test_features, test_labels, "test"
    )
    check_same_dimension(train_features, test_features)
    return train_features, train_labels, test_features, test_labels


def _to_numpy(x):
    """A NumPy array from NumPy, this backend's tensors or TF tensors."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(keras.ops.convert_to_numpy(x))
    except (TypeError, ValueError, AttributeError):
        return np.asarray(x)


def _as_batches(data, labels, batch_size):
    """Returns `(iterable of (images, labels) batches, number or None)`."""
    if isinstance(data, tuple) and len(data) == 2 and labels is None:
        if hasattr(data[0], "shape") and hasattr(data[1], "shape"):
            data, labels = data
    if isinstance(data, np.ndarray) or (
        labels is not None and hasattr(data, "shape")
    ):
        images = _to_numpy(data)
        if labels is None:
            raise ValueError(
                "Images given as an array need `labels=` (one integer per "
                "image), or pass an `(images, labels)` tuple."
            )
        labels = _to_numpy(labels).reshape(-1)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"Got {images.shape[0]} images but {labels.shape[0]} labels; "
                "they must match one to one."
            )
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        count = images.shape[0]
        steps = math.ceil(count / batch_size)
        batches = (
            (images[i : i + batch_size], labels[i : i + batch_size])
            for i in range(0, count, batch_size)
        )
        return batches, steps
    if labels is not None:
        raise ValueError(
            "`labels=` is only for image arrays; a dataset must yield "
            "`(images, labels)` batches."
        )
    steps = None
    cardinality = getattr(data, "cardinality", None)
    if callable(cardinality):
        value = int(cardinality())
        steps = value if value >= 0 else None  # -1 infinite, -2 unknown.
        if value == -1:
            raise ValueError(
                "The dataset is infinite (e.g. `.repeat()` without a count); "
                "pass a finite dataset."
            )
    elif hasattr(data, "__len__"):
        steps = len(data)
    if hasattr(data, "as_numpy_iterator"):
        return data.as_numpy_iterator(), steps
    return iter(data), steps
