"""Zero-shot classification with an image-text model (CLIP, LiT).

Each class is the mean of the L2-normalised text embeddings of its name in
every prompt template ("a photo of a {}."), renormalised (the prompt
ensemble of CLIP); an image is given the class whose embedding is closest
to its own. Works with any model that has `encode_images(images)`,
`encode_texts(token_ids)` and a `preprocessor` with `tokenize(texts)` and
an `image_converter` (`ImageTextModel`).
"""

import importlib.resources

import keras
import numpy as np

from keras_superclass.evaluation.linear_probe import top_k_accuracy

TEMPLATES_FILE = "openai_imagenet_templates.txt"


def _read_lines(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except FileNotFoundError:
        raise FileNotFoundError(f"No {what} file {path!r}.") from None
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise ValueError(
            f"The {what} file {path!r} is empty: write one entry per line."
        )
    return lines


def load_templates(path=None):
    """Prompt templates, one per line, each holding `{}` for the class.

    Args:
        path: a text file; `None` gives OpenAI's 80 ImageNet templates
            (shipped with this package), the usual zero-shot ensemble.

    Example:
    >>> templates = load_templates()
    >>> len(templates), templates[0]
    (80, 'a bad photo of a {}.')
    """
    if path is None:
        resource = importlib.resources.files(__package__).joinpath(
            "assets", TEMPLATES_FILE
        )
        lines = [t for t in resource.read_text("utf-8").splitlines() if t]
        return lines
    templates = _read_lines(path, "templates")
    check_templates(templates, source=path)
    return templates


def check_templates(templates, source="`templates`"):
    """Raises unless every template holds exactly one `{}`."""
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(
            f"Every prompt template in {source} needs exactly one '{{}}' "
            f"where the class name goes, e.g. 'a photo of a {{}}.'; got "
            f"{bad[:3]}."
        )


def load_class_names(path):
    """Class names, one per line, in class-id order (`#` lines skipped)."""
    return _read_lines(path, "class names")


def class_text_embeddings(model, class_names, templates=None, batch_size=256):
    """`(C, D)` float32 class embeddings from names and prompt templates.

    Args:
        model: an image-text model (`encode_texts`, `preprocessor`).
        class_names: `C` readable names ("circle", "golden retriever").
        templates: prompt templates with `{}`; default OpenAI's 80.
        batch_size: prompts per text-tower pass.
    """
    templates = load_templates() if templates is None else list(templates)
    check_templates(templates)
    if not class_names:
        raise ValueError("`class_names` is empty: give one name per class.")
    prompts = [t.format(name) for name in class_names for t in templates]
    token_ids = model.preprocessor.tokenize(prompts)
    features = keras.ops.convert_to_numpy(
        model.encode_texts(token_ids, batch_size=batch_size)
    ).astype("float32")
    features = _l2(features).reshape(len(class_names), len(templates), -1)
    return _l2(features.mean(axis=1))


def _l2(x):
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def image_embeddings(model, dataset, verbose=False):
    """`(features (N, D), labels (N,))` of a dataset of `(images, labels)`
    batches prepared by the model's image converter."""
    features, labels = [], []
    steps = _steps(dataset)
    progbar = keras.utils.Progbar(steps, unit_name="batch") if verbose else None
    for step, (images, batch_labels) in enumerate(_numpy_batches(dataset)):
        encoded = model.encode_images(images)
        features.append(keras.ops.convert_to_numpy(encoded).astype("float32"))
        labels.append(np.asarray(batch_labels).reshape(-1))
        if progbar is not None:
            progbar.update(step + 1)
    if progbar is not None:  # ends the bar's line when the length was unknown
        progbar.update(len(features), finalize=True)
    if not features:
        raise ValueError("No images to classify: the dataset is empty.")
    return _l2(np.concatenate(features)), np.concatenate(labels)


def _steps(dataset):
    cardinality = getattr(dataset, "cardinality", None)
    value = int(cardinality()) if callable(cardinality) else -2
    return value if value >= 0 else None


def _numpy_batches(dataset):
    if hasattr(dataset, "as_numpy_iterator"):
        return dataset.as_numpy_iterator()
    return iter(dataset)


def _reordered(given, data_names):
    """Whether `given` holds exactly the data's names in another order."""
    given, data_names = list(map(str, given)), list(map(str, data_names))
    return given != data_names and sorted(given) == sorted(data_names)


def zero_shot_classify(
    model,
    data,
    class_names=None,
    templates=None,
    top_k=(1, 5),
    label_feature="label",
    split=None,
    batch_size=64,
    verbose=False,
):
    """Zero-shot accuracy of an image-text model on labelled images.

    Args:
        model: an image-text model (`ImageTextModel`, e.g. after LiT).
        data: a class folder, a labels table, labelled TFRecord shards (see
            `labelled_image_dataset`), or a dataset of `(images, labels)`
            batches already prepared for the model.
        class_names: names in class-id order; `None` takes those of the
            data (class folders, table labels or the shards' manifest).
        templates: prompt templates; default OpenAI's 80 ImageNet ones.
        top_k: the `k` of the reported top-k accuracies.
        label_feature: the shards' integer label feature.
        split: the rows of a labels table to use.
        batch_size: images per batch when reading `data` from files.
        verbose: progress bar over the image batches.

    Returns:
        A dict: `top1`, `top5`, ... accuracies (`None` for a k of at
        least the number of classes), `num_images`,
        `num_classes`, `num_templates`, `class_names`, and `predictions`
        (`(N,)` class ids) and `labels`.
    """
    dataset = data
    if isinstance(data, str | list | tuple):
        from keras_superclass.data import labelled_image_dataset

        dataset, data_names = labelled_image_dataset(
            data,
            batch_size=batch_size,
            label_feature=label_feature,
            image_converter=model.preprocessor.image_converter,
            split=split,
        )
        if class_names is None:
            class_names = data_names
        elif data_names is not None and len(data_names) != len(class_names):
            raise ValueError(
                f"{len(class_names)} class names were given but the data "
                f"has {len(data_names)} classes ({data_names[:5]}...): give "
                f"one name per class, in class-id order."
            )
        elif data_names is not None and _reordered(class_names, data_names):
            # The same names in another order would score every image
            # against the wrong class, silently.
            raise ValueError(
                f"The class names {list(class_names)} are the data's "
                f"classes in another order; the data numbers them "
                f"{list(data_names)}. Give them in that order (or leave "
                f"them out to use the data's)."
            )
    if class_names is None:
        raise ValueError(
            "The data names no classes: pass `class_names` (one per class, "
            "in class-id order)."
        )
    templates = load_templates() if templates is None else list(templates)
    weights = class_text_embeddings(model, class_names, templates)
    features, labels = image_embeddings(model, dataset, verbose=verbose)
    if labels.max() >= len(class_names):
        raise ValueError(
            f"Label {int(labels.max())} has no class name: only "
            f"{len(class_names)} names were given."
        )
    scores = features @ weights.T
    # Top-k over k or fewer classes is always 1: left out (None), as in
    # `evaluate_features`.
    result = {
        f"top{k}": top_k_accuracy(scores, labels, k)
        if k == 1 or k < len(class_names)
        else None
        for k in sorted(top_k)
    }
    result.update(
        num_images=int(labels.shape[0]),
        num_classes=len(class_names),
        num_templates=len(templates),
        class_names=list(class_names),
        predictions=np.argmax(scores, axis=1),
        labels=labels,
    )
    return result
