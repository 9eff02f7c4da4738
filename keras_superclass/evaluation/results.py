"""Runs the evaluation protocols on an encoder and writes the results."""

import json
import os
import time

import numpy as np

from keras_superclass.evaluation.features import FeatureExtractor
from keras_superclass.evaluation.features import check_train_and_test
from keras_superclass.evaluation.few_shot import check_few_shot_labels
from keras_superclass.evaluation.few_shot import few_shot_accuracy
from keras_superclass.evaluation.knn import knn_predict
from keras_superclass.evaluation.linear_probe import infer_num_classes
from keras_superclass.evaluation.linear_probe import linear_probe
from keras_superclass.evaluation.linear_probe import probe_top_k_accuracy
from keras_superclass.evaluation.linear_probe import top_k_accuracy
from keras_superclass.utils.io import atomic_write_text

PROTOCOLS = ("linear_probe", "knn", "few_shot")
FEW_SHOT_DEFAULTS = {"shots": (1, 5, 10), "seeds": (0, 1, 2)}


def check_protocols(protocols):
    """Returns `protocols` as a tuple of known names (accepts "a,b")."""
    if isinstance(protocols, str):
        protocols = [p.strip() for p in protocols.split(",") if p.strip()]
    protocols = tuple(protocols)
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise ValueError(
            f"Unknown or no evaluation protocols {unknown or protocols}; "
            f"choose from {', '.join(PROTOCOLS)}."
        )
    return protocols


def evaluate_features(
    train_features,
    train_labels,
    test_features,
    test_labels,
    protocols=PROTOCOLS,
    linear_probe_kwargs=None,
    knn_kwargs=None,
    few_shot_kwargs=None,
):
    """Runs the protocols on extracted features; returns a results dict.

    Args:
        train_features, train_labels: `(N, D)` features, `(N,)` labels.
        test_features, test_labels: `(M, D)` features, `(M,)` labels.
        protocols: any of `"linear_probe"`, `"knn"`, `"few_shot"`.
        linear_probe_kwargs: overrides for `linear_probe` (epochs, ...).
        knn_kwargs: overrides for `knn_predict` (k, temperature, ...).
        few_shot_kwargs: overrides for `few_shot_accuracy` (shots, ...).

    Returns:
        A JSON-serialisable dict; accuracies are fractions in `[0, 1]`.
    """
    protocols = check_protocols(protocols)
    train_features, train_labels, test_features, test_labels = (
        check_train_and_test(
            train_features, train_labels, test_features, test_labels
        )
    )
    if "few_shot" in protocols:  # before the slower linear probe
        check_few_shot_labels(
            train_labels,
            test_labels,
            (few_shot_kwargs or {}).get("shots", FEW_SHOT_DEFAULTS["shots"]),
        )
    num_classes = infer_num_classes(train_labels, test_labels)
    results = {
        "feature_dim": int(train_features.shape[1]),
        "num_train": int(train_features.shape[0]),
        "num_test": int(test_features.shape[0]),
        "num_classes": int(np.union1d(train_labels, test_labels).size),
        "protocols": list(protocols),
    }
    if "linear_probe" in protocols:
        kwargs = {"epochs": 90, "batch_size": 256, "learning_rate": 0.1}
        kwargs.update(linear_probe_kwargs or {})
        start = time.perf_counter()
        top1, probe = linear_probe(
            train_features,
            train_labels,
            test_features,
            test_labels,
            num_classes=num_classes,
            **kwargs,
        )
        results["linear_probe"] = {
            "top1": top1,
            "top5": probe_top_k_accuracy(probe, test_features, test_labels)
            if num_classes > 5
            else None,
            "seconds": round(time.perf_counter() - start, 3),
            **_plain(kwargs),
        }
    if "knn" in protocols:
        kwargs = {"k": 20, "temperature": 0.07}
        kwargs.update(knn_kwargs or {})
        # The report says the k that voted: at most every training example.
        kwargs["k"] = min(int(kwargs["k"]), len(train_labels))
        start = time.perf_counter()
        votes = knn_predict(
            train_features,
            train_labels,
            test_features,
            num_classes=num_classes,
            **kwargs,
        )
        results["knn"] = {
            "top1": top_k_accuracy(votes, test_labels, k=1),
            "top5": top_k_accuracy(votes, test_labels, k=5)
            if num_classes > 5
            else None,
            "seconds": round(time.perf_counter() - start, 3),
            **_plain(kwargs),
        }
    if "few_shot" in protocols:
        kwargs = dict(FEW_SHOT_DEFAULTS)
        kwargs.update(few_shot_kwargs or {})
        start = time.perf_counter()
        runs = few_shot_accuracy(
            train_features, train_labels, test_features, test_labels, **kwargs
        )
        results["few_shot"] = {
            "shots": {str(n): run for n, run in runs.items()},
            "seeds": [int(s) for s in np.atleast_1d(kwargs["seeds"])],
            "seconds": round(time.perf_counter() - start, 3),
        }
    return results


def evaluate_encoder(
    encoder,
    train_data,
    test_data,
    protocols=PROTOCOLS,
    batch_size=256,
    verbose=False,
    output_key="pooled_output",
    linear_probe_kwargs=None,
    knn_kwargs=None,
    few_shot_kwargs=None,
):
    """Extracts features of both splits and runs the evaluation protocols.

    Args:
        encoder: a `keras_hub.models.Backbone` whose outputs hold
            `output_key`, or a task with a `.backbone`.
        train_data: labelled training images (see `extract_features`).
        test_data: labelled test images.
        protocols: any of `"linear_probe"`, `"knn"`, `"few_shot"` (a
            sequence or a comma-separated string).
        batch_size: batch size for image arrays.
        verbose: show progress bars.
        output_key: the encoder output used as the representation.
        linear_probe_kwargs, knn_kwargs, few_shot_kwargs: see
            `evaluate_features`.

    Returns:
        A JSON-serialisable dict with the dataset sizes, the feature
        dimension and one entry per protocol; see `write_results`.

    Example:
    >>> from keras_superclass.models import SuperClassBackbone
    >>> backbone = SuperClassBackbone(image_shape=(32, 32, 3), patch_size=8,
    ...     num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
    >>> train = (np.zeros((8, 32, 32, 3)), np.arange(8) % 2)
    >>> test = (np.zeros((4, 32, 32, 3)), np.arange(4) % 2)
    >>> results = evaluate_encoder(backbone, train, test, protocols=("knn",))
    >>> 0.0 <= results["knn"]["top1"] <= 1.0
    True
    """
    protocols = check_protocols(protocols)
    extractor = FeatureExtractor(encoder, output_key=output_key)
    start = time.perf_counter()
    train = extractor(train_data, batch_size=batch_size, verbose=verbose)
    test = extractor(test_data, batch_size=batch_size, verbose=verbose)
    seconds = round(time.perf_counter() - start, 3)
    results = {
        "encoder": type(extractor.encoder).__name__,
        "output_key": output_key,
        "feature_seconds": seconds,
    }
    results.update(
        evaluate_features(
            *train,
            *test,
            protocols=protocols,
            linear_probe_kwargs=linear_probe_kwargs,
            knn_kwargs=knn_kwargs,
            few_shot_kwargs=few_shot_kwargs,
        )
    )
    return results


def _plain(kwargs):
    """Settings as JSON-friendly scalars and lists."""
    plain = {}
    for key, value in kwargs.items():
        if key == "verbose":
            continue
        if isinstance(value, (tuple, list, np.ndarray)):
            value = [v.item() if hasattr(v, "item") else v for v in value]
        elif hasattr(value, "item"):
            value = value.item()
        plain[key] = value
    return plain


def _percent(value):
    return f"{100.0 * value:.2f}"


def format_results_table(results):
    """The results as a Markdown table (accuracies in percent)."""
    rows = []
    if "linear_probe" in results:
        probe = results["linear_probe"]
        setting = f"{probe.get('epochs', '?')} epochs"
        rows.append(("Linear probe", setting, "top-1", _percent(probe["top1"])))
        if probe.get("top5") is not None:
            rows.append(
                ("Linear probe", setting, "top-5", _percent(probe["top5"]))
            )
    if "knn" in results:
        knn = results["knn"]
        setting = f"k={knn.get('k')}, T={knn.get('temperature')}"
        rows.append(("kNN", setting, "top-1", _percent(knn["top1"])))
        if knn.get("top5") is not None:
            rows.append(("kNN", setting, "top-5", _percent(knn["top5"])))
    if "few_shot" in results:
        few = results["few_shot"]
        seeds = len(few.get("seeds", [])) or "?"
        for shots, run in few["shots"].items():
            value = f"{_percent(run['mean'])} ± {_percent(run['std'])}"
            rows.append(
                (f"{shots}-shot ridge", f"{seeds} seeds", "top-1", value)
            )
    header = ("Protocol", "Setting", "Metric", "Accuracy (%)")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"]) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    summary = (
        f"{results.get('encoder', 'features')}: "
        f"{results.get('num_train', '?')} train / "
        f"{results.get('num_test', '?')} test examples, "
        f"{results.get('num_classes', '?')} classes, "
        f"{results.get('feature_dim', '?')}-d features."
    )
    return summary + "\n\n" + "\n".join(lines) + "\n"


def write_results(results, out_dir):
    """Writes `results.json` and `results.md` into `out_dir`, atomically.

    Each file is written to a temporary file in `out_dir` and moved into
    place with `os.replace`, so readers never see a partial file.

    Returns:
        `(json_path, markdown_path)`.

    Example:
    >>> import os, tempfile
    >>> rng = np.random.default_rng(0)
    >>> y = np.arange(8) % 2
    >>> x = np.eye(2)[y] + 0.1 * rng.normal(size=(8, 2))
    >>> results = evaluate_features(x, y, x, y, protocols=("knn",))
    >>> out_dir = tempfile.mkdtemp()
    >>> paths = write_results(results, out_dir)
    >>> [os.path.basename(path) for path in paths]
    ['results.json', 'results.md']
    """
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "results.json")
    markdown_path = os.path.join(out_dir, "results.md")
    text = json.dumps(results, indent=2, allow_nan=False)
    atomic_write_text(json_path, text + "\n")
    atomic_write_text(
        markdown_path, "# Evaluation\n\n" + format_results_table(results)
    )
    return json_path, markdown_path
