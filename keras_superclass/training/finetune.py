"""Fine-tune a pretrained encoder on labelled images (Python API).

`finetune(preset, images, test=...)` builds a `SuperClassImageClassifier`
on the preset's encoder, trains it with the fine-tuning recipe
(layer-wise rate decay, AdamW, warmup + cosine, label smoothing), reports
the test accuracy and, with `out`, writes the fine-tuned classifier as a
preset (atomically, with `finetune_results.json` inside).
`keras-superclass finetune` is this function on the command line.
"""

import math
import os
import warnings

import keras
import numpy as np

from keras_superclass.data import labelled_files

RESULTS_FILE = "finetune_results.json"


def _labelled_data(path, converter, batch_size, training, **kwargs):
    from keras_superclass.data import labelled_image_dataset

    return labelled_image_dataset(
        path,
        batch_size=batch_size,
        training=training,
        image_converter=converter,
        **kwargs,
    )


def _count_examples(dataset):
    """`(examples, largest label)` of one pass over a labelled dataset."""
    count, largest = 0, -1
    for _, labels in dataset.as_numpy_iterator():
        count += len(labels)
        largest = max(largest, int(np.max(labels)))
    if not count:
        raise ValueError("The training data holds no readable image.")
    return count, largest


def _test_source(images, test):
    if test is not None:
        return test
    if labelled_files.is_label_table(images):
        return images  # the table's test split
    raise ValueError(
        "No test images: pass `test` (--test), a folder of class folders or "
        "labelled shards, or give a labels table with a 'split' column."
    )


def finetune(
    preset,
    images,
    test=None,
    out=None,
    *,
    from_scratch=False,
    epochs=10,
    batch_size=32,
    learning_rate=1e-3,
    layer_decay=0.75,
    weight_decay=0.05,
    label_smoothing=0.1,
    warmup_epochs=1,
    dropout=0.0,
    num_classes=None,
    image_size=None,
    label_feature="label",
    train_split="train",
    test_split="test",
    seed=0,
    verbose="auto",
):
    """Fine-tunes `preset`'s encoder as a classifier of `images`.

    Args:
        preset: a pretrained preset directory (any task of this package, or
            a backbone), a fine-tuned one, or an architecture name.
        images: training images: a folder of class folders, a labels table
            (`file,label[,split]`, files relative to the table) or labelled
            TFRecord shards (`label_feature`).
        test: test images in one of those layouts; default: the
            `test_split` rows of the labels table `images`.
        out: directory for the fine-tuned preset (`None`: not saved).
        from_scratch: the same architecture at random initialisation (the
            baseline that shows what pretraining brings).
        epochs: passes over the training images.
        batch_size: images per step.
        learning_rate: peak rate of the head (AdamW).
        layer_decay: layer-wise rate decay; 1.0 or `None` turns it off.
        weight_decay: decoupled weight decay (none on 1-D weights).
        label_smoothing: label smoothing of the cross-entropy.
        warmup_epochs: linear warmup, then cosine decay to the end.
        dropout: dropout before the head.
        num_classes: classes; default: the class names of the data (or
            the largest label + 1).
        image_size: square input size; default the encoder's.
        label_feature: integer label feature of labelled shards.
        train_split: rows of a labels table used for training.
        test_split: rows of a labels table used for testing.
        seed: model initialisation, shuffling and augmentation seed.
        verbose: Keras progress verbosity (`"auto"`, 0, 1, 2).

    Returns:
        `(model, results)`: the fine-tuned `SuperClassImageClassifier`
        and a dict with `accuracy` (test top-1), `loss`, per-epoch
        `history`, `class_names` and the settings.

    Example (skipped as a doctest: needs a pretrained preset and images):

    >>> model, results = finetune(  # doctest: +SKIP
    ...     "my_preset", "labels.csv", out="my_classifier", epochs=5)
    >>> results["accuracy"]  # doctest: +SKIP
    """
    from keras_superclass.models import SuperClassImageClassifier
    from keras_superclass.training.export import export_preset

    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be a whole number, got {value!r}.")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")
    for name, path in (("images", images), ("test", test)):
        if path is not None and not any(c in os.fspath(path) for c in "*?["):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{name} {path!r} does not exist.")
    test = _test_source(images, test)
    labelled_files.check_separate_splits(images, test, train_split, test_split)
    keras.utils.set_random_seed(seed)
    overrides = {}
    if image_size is not None:
        overrides["image_shape"] = (image_size, image_size, 3)
    # Head size is unknown until the data is listed: build with one class
    # first only to get the image converter the data must go through.
    model = SuperClassImageClassifier.from_preset(
        preset,
        load_weights=not from_scratch,
        num_classes=num_classes or 1,
        dropout=dropout,
        compile=False,
        **overrides,
    )
    converter = model.preprocessor.image_converter
    read = dict(label_feature=label_feature, seed=seed)
    train, class_names = _labelled_data(
        images, converter, batch_size, True, split=train_split, **read
    )
    test_data, _ = _labelled_data(
        test, converter, batch_size, False, split=test_split, **read
    )
    count, largest = _count_examples(train)
    if num_classes is None:
        num_classes = len(class_names) if class_names else largest + 1
        keras.utils.set_random_seed(seed)
        model = SuperClassImageClassifier(
            model.backbone,
            num_classes=num_classes,
            dropout=dropout,
            preprocessor=model.preprocessor,
            compile=False,
        )
    elif largest >= num_classes:
        raise ValueError(
            f"The training labels go up to {largest} but num_classes is "
            f"{num_classes}: pass num_classes={largest + 1} or more."
        )
    steps = math.ceil(count / batch_size)
    model.compile(
        learning_rate=learning_rate,
        total_steps=epochs * steps,
        warmup_steps=min(int(warmup_epochs * steps), epochs * steps - 1),
        weight_decay=weight_decay,
        layer_decay=None if layer_decay in (None, 1.0) else layer_decay,
        label_smoothing=label_smoothing,
    )
    # Repeated with a known epoch length: Keras then neither guesses the
    # length in the first epoch nor warns that the data ran out.
    history = model.fit(
        train.repeat(),
        epochs=epochs,
        steps_per_epoch=steps,
        verbose=verbose,
        shuffle=False,  # the reader shuffles; Keras would warn it cannot
    )
    with warnings.catch_warnings():
        # Read to its end on purpose: a test stream whose length tf.data
        # cannot know (corrupt files are filtered out) makes Keras warn
        # that the input "ran out of data; interrupting training".
        warnings.filterwarnings("ignore", "Your input ran out of data")
        loss, accuracy = model.evaluate(test_data, verbose=0)
    results = {
        "accuracy": float(accuracy),
        "loss": float(loss),
        "history": {
            k: [float(v) for v in values]
            for k, values in history.history.items()
        },
        "class_names": class_names,
        "num_classes": int(num_classes),
        "train_examples": int(count),
        "preset": os.fspath(preset),
        "from_scratch": bool(from_scratch),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "layer_decay": layer_decay,
        "weight_decay": float(weight_decay),
        "label_smoothing": float(label_smoothing),
    }
    if out is not None:
        export_preset(model, None, out, extra_json={RESULTS_FILE: results})
    return model, results
