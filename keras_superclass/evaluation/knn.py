"""Weighted k-nearest-neighbour classifier on frozen features (DINO).

Features are L2-normalised; each test example takes the `k` training
examples of highest cosine similarity, and each neighbour votes for its
class with weight `exp(similarity / temperature)` (DINO's kNN: k=20,
T=0.07). The test rows are processed in chunks, so only a
`(chunk, N_train)` similarity block is held at a time.
"""

import keras
import numpy as np

from keras_superclass.evaluation.features import check_features
from keras_superclass.evaluation.features import check_same_dimension
from keras_superclass.evaluation.features import check_train_and_test
from keras_superclass.evaluation.linear_probe import top_k_accuracy


def l2_normalize(features, epsilon=1e-12):
    """Rows divided by `max(norm, epsilon)` (as `F.normalize`)."""
    features = np.asarray(features, dtype="float32")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, epsilon)


def knn_predict(
    train_features,
    train_labels,
    test_features,
    k=20,
    temperature=0.07,
    num_classes=None,
    chunk_size=256,
):
    """Class votes of the weighted kNN classifier.

    Args:
        train_features: `(N, D)` features of the labelled examples.
        train_labels: `(N,)` integer labels.
        test_features: `(M, D)` features to classify.
        k: neighbours per test example, capped at N.
        temperature: votes are weighted by `exp(cosine / temperature)`.
        num_classes: columns of the votes; default `max(train_labels) + 1`.
        chunk_size: test rows per similarity block.

    Returns:
        `float32 (M, num_classes)` summed vote weights; `argmax` is the
        prediction.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> y_train, y_test = np.arange(40) % 4, np.arange(20) % 4
    >>> x_train = np.eye(4)[y_train] + 0.1 * rng.normal(size=(40, 4))
    >>> x_test = np.eye(4)[y_test] + 0.1 * rng.normal(size=(20, 4))
    >>> votes = knn_predict(x_train, y_train, x_test, k=5)
    >>> votes.shape
    (20, 4)
    >>> bool(np.all(votes.argmax(axis=1) == y_test))
    True
    """
    train_features, train_labels = check_features(
        train_features, train_labels, "train"
    )
    test_features = np.asarray(test_features, dtype="float32")
    if test_features.ndim != 2 or test_features.shape[0] == 0:
        raise ValueError(
            f"`test_features` must be a non-empty (M, D) array, got shape "
            f"{test_features.shape}."
        )
    check_same_dimension(train_features, test_features)
    if k < 1:
        raise ValueError(f"`k` must be >= 1, got {k}.")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
    if num_classes is None:
        num_classes = int(train_labels.max()) + 1
    elif train_labels.max() >= num_classes:
        raise ValueError(
            f"Label {train_labels.max()} is out of range for "
            f"num_classes={num_classes}."
        )
    k = min(k, train_features.shape[0])

    train = keras.ops.convert_to_tensor(l2_normalize(train_features))
    labels = keras.ops.convert_to_tensor(train_labels.astype("int32"))
    test = l2_normalize(test_features)
    votes = []
    for start in range(0, test.shape[0], chunk_size):
        chunk = keras.ops.convert_to_tensor(test[start : start + chunk_size])
        similarity = keras.ops.matmul(chunk, keras.ops.transpose(train))
        top_similarity, top_index = keras.ops.top_k(similarity, k)
        neighbour_labels = keras.ops.take(labels, top_index)
        weights = keras.ops.exp(top_similarity / temperature)
        one_hot = keras.ops.one_hot(neighbour_labels, num_classes)
        chunk_votes = keras.ops.sum(one_hot * weights[..., None], axis=1)
        votes.append(keras.ops.convert_to_numpy(chunk_votes))
    return np.concatenate(votes, axis=0).astype("float32")


def knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    k=20,
    temperature=0.07,
    chunk_size=256,
    top_k=1,
):
    """Top-1 (or top-`top_k`) accuracy of the weighted kNN classifier.

    See `knn_predict` for the arguments. Ties between classes go to the
    lower class id.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> y_train, y_test = np.arange(40) % 4, np.arange(20) % 4
    >>> x_train = np.eye(4)[y_train] + 0.1 * rng.normal(size=(40, 4))
    >>> x_test = np.eye(4)[y_test] + 0.1 * rng.normal(size=(20, 4))
    >>> round(knn_accuracy(x_train, y_train, x_test, y_test, k=5), 2)
    1.0
    """
    train_features, train_labels, test_features, test_labels = (
        check_train_and_test(
            train_features, train_labels, test_features, test_labels
        )
    )
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    votes = knn_predict(
        train_features,
        train_labels,
        test_features,
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        chunk_size=chunk_size,
    )
    return top_k_accuracy(votes, test_labels, k=top_k)
