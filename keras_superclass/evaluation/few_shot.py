"""N-shot linear classification of frozen features (closed-form ridge).

The classifier is big_vision's few-shot evaluator (`fewshot_lsr`): whiten
the features with the mean/std of the N-shot sample, append a constant
feature of 100 as an almost unregularised bias, and solve L2-regularised
least squares to one-hot targets in `{-1, +1}`; the prediction is the
arg-max score. One eigendecomposition of `X^T X` (or `X X^T` when there are
fewer samples than dimensions) gives the solution for every L2 strength.

big_vision uses a fixed L2 strength (2**10). Here it is chosen from a small
grid by accuracy on a holdout drawn from the training examples that were
not sampled as shots (`holdout_per_class` per class; ties go to the value
nearest 2**10); with no such examples it is 2**10. SuperClass reports the
10-shot accuracy as the mean of 3 runs (3 seeds).
"""

import numpy as np

from keras_superclass.evaluation.features import check_train_and_test

BIAS_CONSTANT = 100.0
DEFAULT_L2_REG = 2.0**10
DEFAULT_L2_GRID = tuple(2.0**i for i in range(-4, 21, 2))


class RidgeClassifier:
    """L2-regularised least squares to `{-1, +1}` one-hot targets.

    Fitted once per training sample; `scores(x, l2_reg)` then costs one
    matrix product per L2 strength.

    Args:
        features: `(N, D)` training features.
        labels: `(N,)` class ids in `[0, num_classes)`.
        num_classes: number of classes.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> y_train, y_test = np.arange(40) % 4, np.arange(20) % 4
    >>> x_train = np.eye(4)[y_train] + 0.1 * rng.normal(size=(40, 4))
    >>> x_test = np.eye(4)[y_test] + 0.1 * rng.normal(size=(20, 4))
    >>> ridge = RidgeClassifier(x_train, y_train, num_classes=4)
    >>> predictions = ridge.predict(x_test, l2_reg=1024.0)
    >>> float(np.mean(predictions == y_test))
    1.0
    """

    def __init__(self, features, labels, num_classes):
        x = np.asarray(features, dtype="float64")
        self.mean = x.mean(axis=0, keepdims=True)
        self.std = x.std(axis=0, keepdims=True) + 1e-5
        x = self._prepare(x)
        y = 2.0 * np.eye(num_classes)[np.asarray(labels)] - 1.0
        if x.shape[0] >= x.shape[1]:
            # (X^T X + l2 I)^-1 X^T y = q (eigs + l2)^-1 q^T X^T y.
            self.eigs, q = np.linalg.eigh(x.T @ x)
            self.rhs = q.T @ (x.T @ y)
            self.lhs = q
        else:
            # X^T (X X^T + l2 I)^-1 y = X^T q (eigs + l2)^-1 q^T y.
            self.eigs, q = np.linalg.eigh(x @ x.T)
            self.rhs = q.T @ y
            self.lhs = x.T @ q

    def _prepare(self, x):
        x = (np.asarray(x, dtype="float64") - self.mean) / self.std
        return np.pad(x, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)

    def weights(self, l2_reg):
        """Weights `(D + 1, C)` (last row: the bias feature's weight)."""
        return (self.lhs / (self.eigs + l2_reg)[None, :]) @ self.rhs

    def scores(self, features, l2_reg):
        """Class scores `(M, C)`."""
        return self._prepare(features) @ self.weights(l2_reg)

    def predict(self, features, l2_reg):
        """Predicted class ids `(M,)`."""
        return np.argmax(self.scores(features, l2_reg), axis=1)


def _check_shots(shots):
    shots = tuple(sorted({int(n) for n in np.atleast_1d(shots)}))
    if not shots or min(shots) < 1:
        raise ValueError(f"`shots` must be positive integers, got {shots}.")
    return shots


def _class_indices(train_ids, classes, shots):
    """Ascending indices of each compact class id `0..len(classes) - 1`.

    Raises if a class has fewer than `max(shots)` examples; `classes` maps
    compact ids back to the original labels for the message.
    """
    counts = np.bincount(train_ids, minlength=len(classes))
    needed = max(shots)
    short = [(classes[c], int(n)) for c, n in enumerate(counts) if n < needed]
    if short:
        listed = ", ".join(f"class {c}: {n}" for c, n in short[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        fewest = min(n for _, n in short)
        hint = (
            f"use at most {fewest} shot(s)"
            if fewest
            else "make sure every test class has training examples"
        )
        raise ValueError(
            f"{needed}-shot evaluation needs {needed} training examples of "
            f"every class, but {len(short)} class(es) have fewer ({listed}"
            f"{more}). Either {hint}, or add training data."
        )
    order = np.argsort(train_ids, kind="stable")
    indices = np.split(order, np.cumsum(counts)[:-1])
    return indices


def _compact_classes(train_labels, test_labels, shots):
    """Compact class ids over every class that occurs, and each class's
    training indices; raises if a class has too few for `max(shots)`."""
    classes = np.union1d(train_labels, test_labels)
    train_ids = np.searchsorted(classes, train_labels)
    test_ids = np.searchsorted(classes, test_labels)
    class_indices = _class_indices(train_ids, classes.tolist(), shots)
    return classes, train_ids, test_ids, class_indices


def check_few_shot_labels(train_labels, test_labels, shots=(1, 5, 10)):
    """Raises the error `few_shot_accuracy` would, from the labels alone.

    Lets a caller that runs slower protocols first stop before them.

    Example:
    >>> check_few_shot_labels(np.arange(8) % 4, np.arange(4), shots=(1, 2))
    >>> check_few_shot_labels(np.arange(8) % 4, np.arange(4), shots=(5,))
    Traceback (most recent call last):
    ...
    ValueError: 5-shot evaluation needs 5 training examples of every class, \
but 4 class(es) have fewer (class 0: 2, class 1: 2, class 2: 2, class 3: 2). \
Either use at most 2 shot(s), or add training data.
    """
    _compact_classes(
        np.asarray(train_labels), np.asarray(test_labels), _check_shots(shots)
    )


def few_shot_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    shots=(1, 5, 10),
    seeds=(0, 1, 2),
    l2_reg=None,
    l2_grid=DEFAULT_L2_GRID,
    holdout_per_class=10,
):
    """N-shot accuracy of a ridge classifier, mean and std over seeds.

    For each seed the training examples of every class are shuffled with
    `np.random.default_rng(seed)`; the N-shot sample takes the first N of
    each class (so the 5-shot sample of a seed contains its 1-shot sample)
    and the L2 holdout the next `holdout_per_class`.

    Args:
        train_features: `(N, D)` features to draw the shots from.
        train_labels: `(N,)` integer labels.
        test_features: `(M, D)` features to evaluate on.
        test_labels: `(M,)` integer labels.
        shots: the Ns to evaluate.
        seeds: one run per seed (SuperClass: 3 runs).
        l2_reg: a fixed L2 strength (big_vision: 2**10); `None` picks it
            from `l2_grid` on the holdout.
        l2_grid: candidate L2 strengths.
        holdout_per_class: holdout examples per class for the selection.

    Returns:
        `{N: {"mean", "std", "per_seed", "l2_reg"}}`: test accuracies in
        `[0, 1]` (std over seeds, population form) and the L2 strength of
        each run.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> y_train, y_test = np.arange(40) % 4, np.arange(20) % 4
    >>> x_train = np.eye(4)[y_train] + 0.1 * rng.normal(size=(40, 4))
    >>> x_test = np.eye(4)[y_test] + 0.1 * rng.normal(size=(20, 4))
    >>> results = few_shot_accuracy(x_train, y_train, x_test, y_test,
    ...                             shots=(5,))
    >>> round(results[5]["mean"], 2)
    1.0
    """
    train_features, train_labels, test_features, test_labels = (
        check_train_and_test(
            train_features, train_labels, test_features, test_labels
        )
    )
    shots = _check_shots(shots)
    seeds = tuple(int(s) for s in np.atleast_1d(seeds))
    if not seeds:
        raise ValueError("`seeds` must hold at least one seed.")
    candidates = [l2_reg] if l2_reg is not None else list(l2_grid)
    if not candidates or min(candidates) <= 0:
        raise ValueError(
            f"L2 strengths must be positive, got {candidates}; pass a "
            "non-empty `l2_grid` or a positive `l2_reg`."
        )

    classes, train_ids, test_ids, class_indices = _compact_classes(
        train_labels, test_labels, shots
    )

    runs = {n: {"per_seed": [], "l2_reg": []} for n in shots}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        indices = [rng.permutation(index) for index in class_indices]
        for n in shots:
            chosen = np.concatenate([index[:n] for index in indices])
            ridge = RidgeClassifier(
                train_features[chosen], train_ids[chosen], len(classes)
            )
            held = np.concatenate(
                [index[n : n + holdout_per_class] for index in indices]
            )
            strength = l2_reg
            if strength is None:
                strength = _select_l2(
                    ridge, train_features[held], train_ids[held], l2_grid
                )
            accuracy = np.mean(
                ridge.predict(test_features, strength) == test_ids
            )
            runs[n]["per_seed"].append(float(accuracy))
            runs[n]["l2_reg"].append(float(strength))
    for run in runs.values():
        run["mean"] = float(np.mean(run["per_seed"]))
        run["std"] = float(np.std(run["per_seed"]))
    return runs


def _select_l2(ridge, features, labels, grid):
    """The grid value with the best holdout accuracy.

    Ties (common when the holdout is small or easy) go to the value closest
    to big_vision's fixed default, 2**10, on a log scale.
    """
    if features.shape[0] == 0:
        return DEFAULT_L2_REG
    accuracies = [
        np.mean(ridge.predict(features, strength) == labels)
        for strength in grid
    ]
    best = max(accuracies)
    tied = [s for s, a in zip(grid, accuracies) if a == best]
    return min(tied, key=lambda s: abs(np.log2(s) - np.log2(DEFAULT_L2_REG)))
