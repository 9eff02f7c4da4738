"""Linear probe on frozen features (the MAE recipe, with SGD).

SuperClass reports the linear probe of MAE: drop the head, keep the encoder
(including `ln_post`), and train `BatchNorm (no affine) -> Linear` on the
frozen features. MAE trains it with LARS (base rate 0.1 scaled by
batch / 256, 10 warmup epochs then cosine, no weight decay, 90 epochs).
Keras has no LARS, so this module uses SGD with momentum 0.9 and the same
schedule and rate scaling. Because the probe only sees features, it trains a
tiny Keras model on the extracted features instead of the whole encoder.
"""

import keras
import numpy as np

from keras_superclass.evaluation.features import check_train_and_test


class _ShuffledBatches(keras.utils.PyDataset):
    """Seeded shuffled batches of `(x, y)`; drops the last partial batch."""

    def __init__(self, x, y, batch_size, seed):
        super().__init__()
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        start = index * self.batch_size
        rows = self.order[start : start + self.batch_size]
        return self.x[rows], self.y[rows]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))


def build_linear_probe(feature_dim, num_classes, seed=0):
    """`BatchNormalization` (no affine, eps 1e-6) + `Dense(num_classes)`.

    The normalisation keeps running statistics with momentum 0.9 (PyTorch's
    default, as in MAE) for inference. The Dense kernel starts from a
    truncated normal with std 0.01 and the bias at zero (MAE's head
    initialisation). The model maps features `(B, feature_dim)` to logits
    `(B, num_classes)`.

    Example:
    >>> probe = build_linear_probe(768, 1000)
    >>> tuple(probe(keras.ops.zeros((2, 768))).shape)
    (2, 1000)
    """
    features = keras.Input(shape=(feature_dim,), name="features")
    # momentum 0.9 = PyTorch's BatchNorm1d default (0.1) used by MAE.
    x = keras.layers.BatchNormalization(
        center=False,
        scale=False,
        epsilon=1e-6,
        momentum=0.9,
        name="feature_norm",
    )(features)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.TruncatedNormal(
            stddev=0.01, seed=seed
        ),
        bias_initializer="zeros",
        name="classifier",
    )(x)
    return keras.Model(features, logits, name="linear_probe")


def top_k_accuracy(logits, labels, k=1):
    """Fraction of rows whose label is among the `k` highest scores.

    `k` is capped at the number of classes. Ties are broken towards the
    lower class id.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels).reshape(-1)
    k = min(k, logits.shape[1])
    # A stable sort of the negated scores keeps lower ids first on ties.
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def infer_num_classes(*label_arrays):
    """`max(label) + 1` over all given label arrays."""
    return int(max(int(np.max(labels)) for labels in label_arrays)) + 1


def linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    num_classes=None,
    epochs=90,
    batch_size=256,
    learning_rate=0.1,
    weight_decay=0.0,
    warmup_epochs=10,
    momentum=0.9,
    seed=0,
    verbose=0,
):
    """Trains a linear probe on frozen features; returns test top-1.

    Recipe (MAE linear probing, LARS replaced by SGD): BatchNorm without
    affine parameters (epsilon 1e-6) + Dense, SGD with `momentum`, peak rate
    `learning_rate * batch_size / 256`, linear warmup for `warmup_epochs`
    then cosine decay to 0, softmax cross-entropy. Weight decay is
    decoupled (Keras' `weight_decay`) and applies to the kernel only. Each
    epoch sees the training set in a new seeded order; the last partial
    batch is dropped (as MAE's loader does).

    Args:
        train_features: `(N, D)` training features.
        train_labels: `(N,)` integer labels.
        test_features: `(M, D)` test features.
        test_labels: `(M,)` integer labels.
        num_classes: classes of the probe; default `max(label) + 1`.
        epochs: passes over the training features (MAE: 90).
        batch_size: training batch size (capped at N).
        learning_rate: base rate per 256 examples (MAE: 0.1).
        weight_decay: decoupled weight decay on the kernel (MAE: 0).
        warmup_epochs: linear warmup length, capped at `epochs - 1`.
        momentum: SGD momentum.
        seed: seeds the initialisation and the shuffling.
        verbose: Keras `fit` verbosity.

    Returns:
        `(top1, probe)`: test top-1 accuracy in `[0, 1]` and the trained
        Keras probe (features -> logits).

    Example:
    >>> rng = np.random.default_rng(0)
    >>> y_train, y_test = np.arange(40) % 4, np.arange(20) % 4
    >>> x_train = np.eye(4)[y_train] + 0.1 * rng.normal(size=(40, 4))
    >>> x_test = np.eye(4)[y_test] + 0.1 * rng.normal(size=(20, 4))
    >>> top1, probe = linear_probe(x_train, y_train, x_test, y_test,
    ...                            epochs=20, batch_size=8, warmup_epochs=1)
    >>> round(top1, 2)
    1.0
    """
    train_features, train_labels, test_features, test_labels = (
        check_train_and_test(
            train_features, train_labels, test_features, test_labels
        )
    )
    if num_classes is None:
        num_classes = infer_num_classes(train_labels, test_labels)
    largest = max(train_labels.max(), test_labels.max())
    if largest >= num_classes:
        raise ValueError(
            f"Label {largest} is out of range for num_classes={num_classes}."
        )
    if epochs < 1 or batch_size < 1:
        raise ValueError(
            f"`epochs` and `batch_size` must be >= 1, got {epochs} and "
            f"{batch_size}."
        )

    count = train_features.shape[0]
    batch_size = min(batch_size, count)
    steps_per_epoch = count // batch_size
    total_steps = epochs * steps_per_epoch
    warmup_steps = min(warmup_epochs, epochs - 1) * steps_per_epoch
    peak_rate = learning_rate * batch_size / 256
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=0.0,
        warmup_target=peak_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    probe = build_linear_probe(train_features.shape[1], num_classes, seed)
    optimizer = keras.optimizers.SGD(
        learning_rate=schedule,
        momentum=momentum,
        weight_decay=weight_decay or None,
    )
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in probe.trainable_variables if len(v.shape) < 2]
    )
    probe.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["sparse_categorical_accuracy"],
    )
    batches = _ShuffledBatches(
        train_features, train_labels, batch_size, seed=seed
    )
    probe.fit(batches, epochs=epochs, verbose=verbose)
    logits = probe.predict(
        test_features, batch_size=max(batch_size, 1024), verbose=0
    )
    return top_k_accuracy(logits, test_labels, k=1), probe


def probe_top_k_accuracy(probe, features, labels, k=5, batch_size=1024):
    """Top-k accuracy of a trained probe on `(features, labels)`."""
    logits = probe.predict(
        np.asarray(features, dtype="float32"),
        batch_size=batch_size,
        verbose=0,
    )
    return top_k_accuracy(logits, labels, k=k)
