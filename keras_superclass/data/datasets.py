"""The public readers: shards (or class folders) to training batches.

`image_text_dataset` yields `(images, token_ids)` (or captions, or stored
labels) from image-caption shards for `model.fit` on any backend;
`labelled_image_dataset` yields `(images, labels)` for evaluation. Both are
the same steps: a record stream (`records`), a loader of one record, the
per-record image step and the per-batch step (`image_pipeline`), with
their options in one `ReadOptions`.
"""

import json
import os

import tensorflow as tf

from keras_superclass.data import corrupt_records
from keras_superclass.data import image_pipeline
from keras_superclass.data import labelled_files
from keras_superclass.data import records as records_lib
from keras_superclass.data import schema
from keras_superclass.data import transforms
from keras_superclass.data.corrupt_records import CorruptRecordCounter
from keras_superclass.data.image_converter import SuperClassImageConverter
from keras_superclass.data.read_options import ReadOptions

AUTOTUNE = tf.data.AUTOTUNE


def image_text_dataset(
    file_pattern,
    batch_size,
    image_size=224,
    training=True,
    label_fn=None,
    tokenizer=None,
    max_labels=64,
    shuffle_buffer=2048,
    seed=None,
    deterministic=False,
    process_index=None,
    process_count=None,
    strong_augment=False,
    normalize=True,
    drop_remainder=True,
    scale=None,
    ratio=transforms.DEFAULT_RATIO,
    cycle_length=8,
    repeat=False,
    counter=None,
    skip_batches=0,
    label_feature=None,
    resize_method="pil",
    preprocessor=None,
):
    """Batches of `(images, token_ids)` from image-caption shards.

    Pipeline: this process's share of the shard files (file `i` goes to
    process `i % process_count`) -> parallel interleaved reads -> shuffle
    (training) -> decode any JPEG / PNG / GIF / BMP / WebP (grayscale, RGBA,
    CMYK) to RGB -> train transform (RandomResizedCrop scale (0.9, 1) or
    (0.4, 1) with `strong_augment`, ratio (3/4, 4/3), bicubic, no flip; plus
    ColorJitter p=0.8 and grayscale p=0.2 with `strong_augment`) or eval
    transform (shorter side to `image_size`, centre crop) -> OpenAI mean/std
    normalisation -> captions to labels -> batch -> prefetch.

    Bad records are skipped and counted in `dataset.corrupt_records` (a
    `CorruptRecordCounter`); see `CorruptRecordReport`.

    Args:
        file_pattern: glob, folder of `*.tfrecord`, or list of them.
        batch_size: per-process batch size.
        image_size: output side length.
        training: random crops + shuffling, else the eval transform in order.
        label_fn: `fn(caption tf.string scalar) -> int32 (max_labels,)`; with
            neither `label_fn` nor `tokenizer` the batches are
            `(images, captions)`. A function with attribute `batched = True`
            (as `labels.make_label_fn`'s) is called once per batch on the
            `(B,)` captions instead: much faster.
        tokenizer: a tokenizer (or kind for `tokenizers.get_tokenizer`) made
            into a label function with `labels.make_label_fn`.
        max_labels: padded label length when `tokenizer` is given.
        shuffle_buffer: records in the shuffle buffer (training).
        seed: seed of shuffling and augmentation. With `deterministic=True`
            the batches are the same on every run and every backend (the
            random ops are stateless, seeded by `seed` and record position).
        deterministic: the same elements in the same order on every run,
            whatever the timing (reads and decoding run sequentially:
            slower; needed for exact resume).
        process_index: this process's index (default: Keras distribution /
            JAX / torch.distributed, else 0).
        process_count: number of processes (default as above, else 1).
        strong_augment: the reference's strong augmentation.
        normalize: float32 normalised output; `False` gives uint8 [0, 255],
            a quarter of the bytes and no host work: normalise on the
            device instead (the tasks' `normalize_images=True`).
        drop_remainder: drop the last partial batch.
        scale: crop area range; default (0.9, 1) or (0.4, 1) when strong.
        ratio: crop aspect ratio range.
        cycle_length: shard files read at once.
        repeat: repeat forever.
        counter: a `CorruptRecordCounter` to count into (default: new one).
        skip_batches: fast-forward past this many batches without decoding
            them (resuming a run): records are skipped while still
            serialised, and the per-record augmentation seeds stay those of
            an uninterrupted run. Exact unless corrupt records were dropped
            in the skipped part.
        label_feature: take labels from this int64-list feature of the
            shards (e.g. CatLIP's "synsets") instead of the caption, padded
            with -1 (or truncated) to `max_labels`.
        resize_method: `"pil"` (PIL's antialiased bicubic: the reference's
            resize exactly), `"antialias"` (pure TensorFlow ops, within one
            grey level of PIL) or `"fast"` (TensorFlow bicubic without
            antialiasing: fastest, aliases when shrinking a lot); see
            `transforms.resize_bicubic`.
        preprocessor: a task's preprocessor (`task.preprocessor`): its
            image converter sets the image size, resize method and
            normalisation, and it turns captions into the task's labels
            (tokens or synsets). Replaces `image_size`, `resize_method`,
            `normalize`, `tokenizer` and `max_labels`. The batches are what
            the task takes; its `fit` may map the preprocessor again, which
            changes nothing.

    Returns:
        A `tf.data.Dataset` with attribute `corrupt_records`.

    Example (skipped as a doctest: needs TFRecord shards on disk):

    >>> task = SuperClassClassifier.from_preset(  # doctest: +SKIP
    ...     "superclass_vit_b16")
    >>> ds = image_text_dataset("shards/*.tfrecord", batch_size=64,
    ...                         preprocessor=task.preprocessor, seed=0,
    ...                         repeat=True)  # doctest: +SKIP
    >>> images, token_ids = next(iter(ds))  # doctest: +SKIP
    """
    if deterministic and seed is None:
        raise ValueError(
            "deterministic=True needs a `seed` so every run draws the same "
            "crops; pass e.g. seed=0."
        )
    if preprocessor is not None:
        converter = preprocessor.image_converter
        if label_fn is not None or tokenizer is not None:
            raise ValueError(
                "Pass either `preprocessor` (which labels the captions) or "
                "`label_fn`/`tokenizer`, not both."
            )
        if label_feature is None:

            def label_fn(captions):
                return preprocessor.labels(captions)

            label_fn.batched = True  # called once per batch of captions
        max_labels = preprocessor.max_labels
    else:
        converter = SuperClassImageConverter(
            image_size, resize_method, normalize=normalize
        )
    options = ReadOptions(
        training=training,
        seed=seed,
        deterministic=deterministic,
        shuffle_buffer=shuffle_buffer,
        cycle_length=cycle_length,
        repeat=repeat,
        converter=converter,
        strong_augment=strong_augment,
        scale=scale,
        ratio=ratio,
        skip_records=int(skip_batches) * int(batch_size),
        batch_size=batch_size,
        drop_remainder=drop_remainder,
    )
    files = records_lib.files_of_process(
        records_lib.list_shards(file_pattern), process_index, process_count
    )
    counter = counter or CorruptRecordCounter()
    if preprocessor is None:
        label_fn = _resolve_label_fn(label_fn, tokenizer, max_labels)
    if label_feature and (label_fn is not None):
        raise ValueError(
            "Pass either `label_feature` or `label_fn`/`tokenizer`, not both."
        )

    records = records_lib.record_stream(files, counter, options)
    load, payload_spec = _caption_record_loader(label_feature, max_labels)
    ds = image_pipeline.decode_and_transform(
        records,
        load,
        payload_spec,
        image_pipeline.image_transform(options),
        options,
        counter,
    )
    batched = getattr(label_fn, "batched", False)
    if label_fn is not None and not batched:
        # A per-caption label function runs per record, before batching.
        ds = ds.map(
            lambda image, caption, code: (image, label_fn(caption), code),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
    return image_pipeline.batch(
        ds, options, counter, batch_label_fn=label_fn if batched else None
    )


def _caption_record_loader(label_feature, max_labels):
    """`(load, payload_spec)` for image-caption records.

    `load(serialized) -> (encoded_image, payload, code)`: the payload is
    the caption, or with `label_feature` that int64-list feature padded
    with -1 (or truncated) to `max_labels`; `code` is the caption's reason
    code (see `corrupt_records.caption_code`).
    """
    spec = schema.feature_spec(
        extra_features=[label_feature] if label_feature else None,
        required=(schema.IMAGE, schema.CAPTION),
    )

    def load(serialized):
        parsed = tf.io.parse_single_example(serialized, spec)
        caption = parsed[schema.CAPTION]
        payload = caption
        if label_feature:
            ids = tf.cast(
                tf.sparse.to_dense(parsed[label_feature], default_value=-1),
                tf.int32,
            )[:max_labels]
            payload = tf.pad(
                ids, [[0, max_labels - tf.shape(ids)[0]]], constant_values=-1
            )
            payload = tf.ensure_shape(payload, (max_labels,))
        code = corrupt_records.caption_code(caption)
        return parsed[schema.IMAGE], payload, code

    if label_feature:
        return load, tf.TensorSpec((max_labels,), tf.int32)
    return load, tf.TensorSpec((), tf.string)


def _resolve_label_fn(label_fn, tokenizer, max_labels):
    if label_fn is not None and tokenizer is not None:
        raise ValueError("Pass either `label_fn` or `tokenizer`, not both.")
    if tokenizer is None:
        return label_fn
    if isinstance(tokenizer, str):
        from keras_superclass.data.tokenizers import get_tokenizer

        tokenizer = get_tokenizer(tokenizer)
    from keras_superclass.data.labels import make_label_fn

    return make_label_fn(tokenizer, max_labels=max_labels, pad_id=-1)


def _manifest_class_names(files, label_feature):
    path = os.path.join(os.path.dirname(files[0]), schema.MANIFEST_NAME)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    names = manifest.get("metadata", {}).get("class_names", {})
    return names.get(label_feature)


def labelled_image_dataset(
    path,
    image_size=224,
    batch_size=32,
    training=False,
    label_feature="label",
    seed=None,
    deterministic=True,
    shuffle_buffer=2048,
    normalize=True,
    drop_remainder=False,
    process_index=0,
    process_count=1,
    counter=None,
    resize_method="pil",
    image_converter=None,
    split=None,
):
    """Batches of `(images, labels)` for evaluation (linear probe, kNN).

    Three layouts:

    - a folder of class sub-folders (`path/CLASS/*.jpg`): class ids follow
      the sorted class folder names;
    - a labels table (`.csv` / `.tsv`) with columns `file` (relative to the
      table's folder), `label` and optionally `split` (then pick one with
      `split`): class ids follow the sorted label names of the whole table;
    - TFRecord shards (glob, folder or list) with an integer feature
      `label_feature` (the first value is used), e.g. the demo dataset's
      `label_shape` / `label_color` / `label_count`; class names come from
      the shard folder's `manifest.json` (`metadata.class_names`) when
      present, else `None`.

    Args:
        path: class folder, labels table, shard glob / folder, or list of
            shard files.
        image_size: output side length.
        batch_size: batch size.
        training: random crop (scale (0.9, 1)) + shuffle instead of the eval
            transform.
        label_feature: integer feature holding the label (TFRecords).
        seed: shuffle / augmentation seed.
        deterministic: keep a fixed element order.
        shuffle_buffer: shuffle buffer size when training.
        normalize: OpenAI mean/std float32, else uint8.
        drop_remainder: drop the last partial batch.
        process_index: this process's index (files are split by process).
        process_count: number of processes.
        counter: a `CorruptRecordCounter` to count into.
        resize_method: `"pil"`, `"antialias"` or `"fast"`, as in
            `image_text_dataset`.
        image_converter: a `SuperClassImageConverter` (e.g. a task's
            `preprocessor.image_converter`) to prepare the images with;
            replaces `image_size`, `resize_method` and `normalize`.
        split: the rows of a labels table whose `split` column equals it.

    Returns:
        `(dataset, class_names)`: `dataset` yields `(images, labels int32)`
        and has attribute `corrupt_records`; `class_names` is a list or
        `None`.

    Example (skipped as a doctest: needs TFRecord shards on disk):

    >>> ds, names = labelled_image_dataset("demo/test", 64, 128,
    ...                                    label_feature="label_shape")
    ... # doctest: +SKIP
    """
    counter = counter or CorruptRecordCounter()
    if deterministic and training and seed is None:
        seed = 0
    if image_converter is None:
        image_converter = SuperClassImageConverter(
            image_size, resize_method, normalize=normalize
        )
    options = ReadOptions(
        training=training,
        seed=seed,
        deterministic=deterministic,
        shuffle_buffer=shuffle_buffer,
        converter=image_converter,
        batch_size=batch_size,
        drop_remainder=drop_remainder,
    )
    if labelled_files.is_class_folder(path) or labelled_files.is_label_table(
        path
    ):
        if labelled_files.is_label_table(path):
            listing = labelled_files.label_table_files(path, split)
        else:
            listing = labelled_files.class_folder_files(path)
        paths, labels, class_names = listing
        records, load = _image_file_records(
            (paths, labels), options, process_index, process_count
        )
    else:
        files = records_lib.files_of_process(
            records_lib.list_shards(path), process_index, process_count
        )
        records_lib.check_int_feature(files, label_feature)
        class_names = _manifest_class_names(files, label_feature)
        records = records_lib.record_stream(files, counter, options)
        load = _labelled_record_loader(label_feature)

    ds = image_pipeline.decode_and_transform(
        records,
        load,
        tf.TensorSpec((), tf.int32),
        image_pipeline.image_transform(options),
        options,
        counter,
    )
    return image_pipeline.batch(ds, options, counter), class_names


def _image_file_records(files, options, process_index, process_count):
    """`(records, load)` of image files and their int labels."""
    paths, labels = files
    records = tf.data.Dataset.from_tensor_slices(
        (paths, tf.constant(labels, tf.int32))
    )
    records = records.shard(process_count, process_index)
    if options.training:
        records = records.shuffle(
            len(paths), seed=options.seed, reshuffle_each_iteration=True
        )

    def load(record):
        file, label = record
        return tf.io.read_file(file), label, tf.constant(0, tf.int32)

    return records, load


def _labelled_record_loader(label_feature):
    """`load(serialized) -> (encoded_image, label, 0)` for labelled shards
    (the first value of the int feature `label_feature`)."""
    spec = {
        schema.IMAGE: tf.io.FixedLenFeature([], tf.string),
        label_feature: tf.io.VarLenFeature(tf.int64),
    }

    def load(serialized):
        parsed = tf.io.parse_single_example(serialized, spec)
        label = tf.sparse.to_dense(parsed[label_feature])[0]
        return (
            parsed[schema.IMAGE],
            tf.cast(label, tf.int32),
            tf.constant(0, tf.int32),
        )

    return load
