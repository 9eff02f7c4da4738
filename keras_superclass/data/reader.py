"""tf.data readers: image-caption shards to training batches.

`image_text_dataset` reads the TFRecord shards written by `write_shards`
and yields `(images, token_ids)` batches for `model.fit` on any backend;
`labelled_image_dataset` yields `(images, labels)` for evaluation.

Corrupt data never crashes a run and never passes silently: undecodable
images, blank captions, invalid UTF-8 captions and damaged shard files are
skipped and counted in a `CorruptRecordCounter` (attached to the returned
dataset as `dataset.corrupt_records`); `CorruptRecordReport` prints the
counts at the end of every epoch.
"""

import glob
import json
import os
import threading

import keras
import tensorflow as tf

from keras_superclass.data import python_ops
from keras_superclass.data import schema
from keras_superclass.data import transforms
from keras_superclass.utils.constants import IMAGE_EXTENSIONS

AUTOTUNE = tf.data.AUTOTUNE

# Reason codes inside the graph: 0 the record is fine, > 0 a bad caption,
# `_END` the end-of-stream marker (never counted). Undecodable images raise
# instead and are counted from gaps in the record numbering (see
# `_image_pipeline`).
_EMPTY = 2
_INVALID_UTF8 = 3
_END = -1
_CODES = {
    _EMPTY: schema.EMPTY_CAPTION,
    _INVALID_UTF8: schema.INVALID_UTF8_CAPTION,
}


class CorruptRecordCounter:
    """Counts the records a reader skipped, by reason (thread-safe).

    Reasons: `undecodable_image` (also records that do not parse),
    `empty_caption`, `invalid_utf8_caption`, `truncated_shard` and
    `corrupt_shard` (a shard file that ends early or fails its checksum:
    the records before the damage are used, one count per file read).
    Counts accumulate over epochs until `reset()`.

    Example:

    >>> ds = image_text_dataset("shards/*.tfrecord", 32, label_fn=fn)
    ... # doctest: +SKIP
    >>> for batch in ds: ...  # doctest: +SKIP
    >>> ds.corrupt_records.counts()  # doctest: +SKIP
    {'undecodable_image': 2}
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {}

    def add(self, reason, count=1):
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + int(count)

    def counts(self):
        """Dict `reason -> count` of the reasons seen so far."""
        with self._lock:
            return dict(sorted(self._counts.items()))

    @property
    def total(self):
        return sum(self.counts().values())

    def reset(self):
        with self._lock:
            self._counts = {}

    def _add_code(self, code):
        self.add(_CODES[int(code)])
        return code

    def __repr__(self):
        return f"CorruptRecordCounter({self.counts()})"


class CorruptRecordReport(keras.callbacks.Callback):
    """Prints the corrupt-record counts of a reader at each epoch's end.

    Args:
        source: a `CorruptRecordCounter`, or a dataset returned by this
            module's readers (its `corrupt_records`).
        print_fn: where the line goes (default `print`).

    Example:

    >>> ds = image_text_dataset("shards/*.tfrecord", 32, label_fn=fn)
    ... # doctest: +SKIP
    >>> model.fit(ds, callbacks=[CorruptRecordReport(ds)])  # doctest: +SKIP
    """

    def __init__(self, source, print_fn=print):
        super().__init__()
        self.counter = getattr(source, "corrupt_records", source)
        if not isinstance(self.counter, CorruptRecordCounter):
            raise ValueError(
                "CorruptRecordReport needs a CorruptRecordCounter or a dataset "
                "made by `image_text_dataset` / `labelled_image_dataset`; got "
                f"{type(source).__name__}."
            )
        self.print_fn = print_fn
        self._last = {}

    def on_epoch_end(self, epoch, logs=None):
        counts = self.counter.counts()
        new = {k: v - self._last.get(k, 0) for k, v in counts.items()}
        self._last = counts
        if counts:
            text = ", ".join(f"{k}={v} (+{new[k]})" for k, v in counts.items())
        else:
            text = "none"
        self.print_fn(f"Epoch {epoch + 1}: corrupt records skipped: {text}")


def default_process_index_and_count():
    """`(index, count)` of this process's share of the data.

    With a multi-process Keras distribution: `(0, 1)` when it shards the
    dataset itself (`auto_shard_dataset=True`, the default), else its data
    shard id among the model replicas. Otherwise the JAX process index, then
    `torch.distributed`, else `(0, 1)`.
    """
    try:
        distribution = keras.distribution.distribution()
    except Exception:
        distribution = None
    if distribution is not None and distribution.num_processes > 1:
        if getattr(distribution, "_auto_shard_dataset", False):
            return 0, 1  # Keras shards the dataset per process.
        try:
            replicas = min(
                distribution.num_model_replicas, distribution.num_processes
            )
        except NotImplementedError:
            replicas = distribution.num_processes
        return distribution.data_shard_id, replicas
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index(), jax.process_count()
    if keras.backend.backend() == "torch":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    return 0, 1


def list_shards(file_pattern):
    """Sorted shard files of a glob, a folder (its `*.tfrecord`) or a list."""
    if isinstance(file_pattern, str | os.PathLike):
        file_pattern = [file_pattern]
    files = []
    for item in file_pattern:
        item = os.fspath(item)
        if os.path.isdir(item):
            item = os.path.join(item, "*" + schema.SHARD_SUFFIX)
        files.extend(tf.io.gfile.glob(item) if glob.has_magic(item) else [item])
    files = sorted(set(files))
    if not files:
        raise FileNotFoundError(
            f"No shard files match {file_pattern!r}. Write shards with "
            f"`keras-superclass shards` first."
        )
    return files


def _shard_files(files, process_index, process_count):
    if process_index is None or process_count is None:
        default_index, default_count = default_process_index_and_count()
        process_index = (
            default_index if process_index is None else process_index
        )
        process_count = (
            default_count if process_count is None else process_count
        )
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index={process_index} must lie in [0, {process_count})."
        )
    if len(files) < process_count:
        raise ValueError(
            f"{len(files)} shard file(s) cannot be split over {process_count} "
            f"processes; write at least one shard per process "
            f"(smaller --records-per-shard)."
        )
    return files[process_index::process_count]


def _record_iterator(path):
    """`tf.compat.v1.io.tf_record_iterator` (C++ reader with checksums,
    raising `DataLossError` at damage) without its deprecation notice."""
    try:
        from tensorflow.python.util import deprecation

        with deprecation.silence():
            iterator = tf.compat.v1.io.tf_record_iterator(path)
    except ImportError:
        iterator = tf.compat.v1.io.tf_record_iterator(path)
    return iterator


# TFRecord framing: 8-byte length, 4-byte length CRC, data, 4-byte data CRC.
_RECORD_OVERHEAD = 16
_ACCOUNTING_BLOCK = 64  # Records per block of the byte accounting.


def _damage_reason(path):
    """`truncated_shard` or `corrupt_shard` for a file that did not read to
    its end (only called for damaged files)."""
    path = path.decode() if isinstance(path, bytes) else path
    try:
        for _ in _record_iterator(path):
            pass
    except tf.errors.DataLossError as error:
        if "truncated" in str(error):
            return schema.TRUNCATED_SHARD
    return schema.CORRUPT_SHARD


def _file_records(files, counter, training, seed, cycle_length, deterministic):
    """Serialised records of `files`, read in parallel by TensorFlow's
    native reader; a damaged file is read up to the damage and counted once.

    `TFRecordDataset` stops quietly at a truncated record and raises at a
    checksum error, so each file's records are followed by a marker holding
    the bytes they span: less than the file's size means damage.
    """
    sizes = [tf.io.gfile.stat(f).length for f in files]

    def count_damage(path):
        counter.add(_damage_reason(path.numpy()))
        return True

    def file_dataset(path, size):
        # The accounting runs on blocks of records: one function call per
        # block instead of per record (those calls were most of the cost).
        blocks = (
            tf.data.TFRecordDataset(path)
            .ignore_errors(log_warning=False)
            .batch(_ACCOUNTING_BLOCK)
        )
        marked = blocks.map(lambda r: (r, False)).concatenate(
            tf.data.Dataset.from_tensors((tf.zeros([0], tf.string), True))
        )

        def tally(read, element):
            block, is_end = element
            read += tf.reduce_sum(tf.cast(tf.strings.length(block), tf.int64))
            read += _RECORD_OVERHEAD * tf.size(block, out_type=tf.int64)
            damaged = tf.logical_and(is_end, read < size)
            damaged = tf.cond(
                damaged,
                lambda: python_ops.py_function(count_damage, [path], tf.bool),
                lambda: False,
            )
            return read, (block, tf.logical_or(is_end, damaged))

        return (
            marked.scan(tf.constant(0, tf.int64), tally)
            .filter(lambda block, is_end: tf.logical_not(is_end))
            .map(lambda block, is_end: block)
            .unbatch()
        )

    ds = tf.data.Dataset.from_tensor_slices(
        (files, tf.constant(sizes, tf.int64))
    )
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    cycle_length = max(1, min(cycle_length, len(files)))
    if deterministic:  # Sequential: the order must not depend on timing.
        return ds.interleave(file_dataset, cycle_length, block_length=1)
    return ds.interleave(
        file_dataset,
        cycle_length,
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=False,
    )


def _record_stream(
    files,
    counter,
    training,
    seed,
    shuffle_buffer,
    cycle_length,
    deterministic,
    repeat,
):
    """Serialised records: files and records shuffled when training, one
    pass or (`repeat`) passes forever, each pass shuffled anew.

    A repeated stream is built inside `flat_map`, so each iterator gets
    fresh shuffle state and every iterator of the dataset gives the same
    stream (a dataset's own shuffle state runs on across iterators, and
    Keras makes a second iterator after peeking at the first batch on some
    backends: a resumed run would see other data than an uninterrupted one).
    """

    def stream(_=None):
        records = _file_records(
            files, counter, training, seed, cycle_length, deterministic
        )
        if training and shuffle_buffer:
            records = records.shuffle(
                shuffle_buffer, seed=seed, reshuffle_each_iteration=True
            )
        return records.repeat() if repeat else records

    if not repeat:
        return stream()
    return tf.data.Dataset.range(1).flat_map(stream)


def _caption_code(caption):
    valid = tf.equal(
        tf.strings.unicode_transcode(
            caption, "UTF-8", "UTF-8", errors="replace"
        ),
        caption,
    )
    blank = tf.strings.regex_full_match(caption, r"[\s\p{Z}]*")
    return tf.where(
        valid, tf.where(blank, _EMPTY, 0), tf.cast(_INVALID_UTF8, tf.int32)
    )


def _image_pipeline(
    records,
    load,
    payload_spec,
    image_size,
    training,
    seed,
    strong_augment,
    scale,
    ratio,
    counter,
    deterministic,
    resize_method="pil",
    endless=False,
    skip_records=0,
):
    """Decodes + transforms records into `(image, payload, code)`; bad
    records are counted and dropped (the kept ones have code 0).

    `load(record) -> (encoded_image, payload, code)` where `code > 0` names
    a bad caption. Records are numbered in stream order (the number seeds
    the augmentation, so a resumed run draws the same crops); images that
    fail to decode are dropped by `ignore_errors` and counted from the gaps
    in that numbering (the decode map keeps order; an end marker catches
    failures at the very end).
    """
    if resize_method not in transforms.RESIZE_METHODS:
        raise ValueError(
            f"Unknown resize_method {resize_method!r}; use one of "
            f"{transforms.RESIZE_METHODS}."
        )
    if scale is None:
        scale = (
            transforms.STRONG_SCALE
            if strong_augment
            else (transforms.TRAIN_SCALE)
        )
    image_spec = tf.zeros((image_size, image_size, 3), tf.uint8)
    bad_payload = tf.nest.map_structure(
        lambda s: tf.zeros(s.shape, s.dtype), payload_spec
    )
    base_seed = None if seed is None else int(seed)

    def example_seed(index):
        if base_seed is None:
            return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
        return tf.stack([tf.constant(base_seed, tf.int64), index])

    def transform(encoded, index):
        image = transforms.decode_rgb(encoded)
        if training:
            seeds = transforms.split_seed(example_seed(index), 2)
            image = transforms.random_resized_crop(
                image, image_size, seeds[0], scale, ratio, resize_method
            )
            if strong_augment:
                image = transforms.strong_augment(image, seeds[1])
            return image
        return transforms.resize_center_crop(image, image_size, resize_method)

    # Each record is tagged `(is_end, record)`; a finite stream ends with a
    # marker so failures among its last records are counted too. (`zip`
    # tags without a function call per record: in tf.data those cost tens
    # of microseconds each, a noticeable share of an image's budget.)
    not_end = tf.data.Dataset.from_tensors(tf.constant(False)).repeat()
    records = tf.data.Dataset.zip((not_end, records))
    if not endless:
        end = tf.nest.map_structure(
            lambda s: tf.zeros(s.shape, s.dtype), records.element_spec[1]
        )
        records = records.concatenate(
            tf.data.Dataset.from_tensors((tf.constant(True), end))
        )
    records = records.enumerate()
    if skip_records:
        records = records.skip(int(skip_records))

    def process(index, element):
        is_end, record = element

        def decode():
            encoded, payload, code = load(record)
            image = tf.cond(
                code > 0, lambda: image_spec, lambda: transform(encoded, index)
            )
            return image, payload, code

        image, payload, code = tf.cond(
            is_end,
            lambda: (image_spec, bad_payload, tf.constant(_END, tf.int32)),
            decode,
        )
        return index, image, payload, code

    ds = records.map(
        process, num_parallel_calls=AUTOTUNE, deterministic=True
    ).ignore_errors(log_warning=False)

    def count_undecodable(expected, element):
        index, image, payload, code = element
        missing = index - expected
        code = tf.cond(
            missing > 0,
            lambda: python_ops.py_function(
                lambda n, c: counter.add(schema.UNDECODABLE_IMAGE, int(n)) or c,
                [missing, code],
                tf.int32,
            ),
            lambda: code,
        )
        return index + 1, (image, payload, code)

    ds = ds.scan(tf.constant(int(skip_records), tf.int64), count_undecodable)

    def keep(image, payload, code):
        code = tf.cond(
            code > 0,
            lambda: python_ops.py_function(counter._add_code, [code], tf.int32),
            lambda: code,
        )
        return tf.equal(code, 0)

    # Elements keep their (zero) code: `_finish` drops it once per batch.
    return ds.filter(keep)


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


def _finish(
    ds,
    batch_size,
    drop_remainder,
    counter,
    deterministic,
    normalize,
    batch_label_fn=None,
):
    """Batches `(image, payload, code)` elements into `(images, payload)`,
    normalising the images and turning captions into labels a batch at a
    time (one vectorised op per batch is much cheaper than one per image).
    """
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def per_batch(images, payload, codes):
        # `codes` (all zero: bad records are gone) served the bookkeeping.
        if normalize:
            images = transforms.normalize(images)
        if batch_label_fn is not None:
            payload = batch_label_fn(payload)
        return images, payload

    ds = ds.map(per_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    ds = ds.with_options(options)
    ds.corrupt_records = counter
    return ds


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

    Returns:
        A `tf.data.Dataset` with attribute `corrupt_records`.

    Example:

    >>> ds = image_text_dataset("shards/train/*.tfrecord", batch_size=64,
    ...                         tokenizer="clip", seed=0)  # doctest: +SKIP
    >>> images, token_ids = next(iter(ds))  # doctest: +SKIP
    """
    if deterministic and seed is None:
        raise ValueError(
            "deterministic=True needs a `seed` so every run draws the same "
            "crops; pass e.g. seed=0."
        )
    files = _shard_files(
        list_shards(file_pattern), process_index, process_count
    )
    counter = counter or CorruptRecordCounter()
    label_fn = _resolve_label_fn(label_fn, tokenizer, max_labels)

    records = _record_stream(
        files,
        counter,
        training,
        seed,
        shuffle_buffer,
        cycle_length,
        deterministic,
        repeat,
    )

    def load(serialized):
        parsed = tf.io.parse_single_example(
            serialized,
            schema.feature_spec(
                extra_features=[label_feature] if label_feature else None,
                required=(schema.IMAGE, schema.CAPTION),
            ),
        )
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
        return parsed[schema.IMAGE], payload, _caption_code(caption)

    if label_feature and (label_fn is not None):
        raise ValueError(
            "Pass either `label_feature` or `label_fn`/`tokenizer`, not both."
        )
    payload_spec = (
        tf.TensorSpec((max_labels,), tf.int32)
        if label_feature
        else tf.TensorSpec((), tf.string)
    )
    ds = _image_pipeline(
        records,
        load,
        payload_spec,
        image_size,
        training,
        seed,
        strong_augment,
        scale,
        ratio,
        counter,
        deterministic,
        resize_method=resize_method,
        endless=repeat,
        skip_records=int(skip_batches) * int(batch_size),
    )
    batched = getattr(label_fn, "batched", False)
    if label_fn is not None and not batched:
        ds = ds.map(
            lambda image, caption, code: (image, label_fn(caption), code),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
    return _finish(
        ds,
        batch_size,
        drop_remainder,
        counter,
        deterministic,
        normalize,
        batch_label_fn=label_fn if batched else None,
    )


def _is_class_folder(path):
    path = os.fspath(path)
    if not os.path.isdir(path):
        return False
    entries = os.listdir(path)
    has_shards = any(e.endswith(schema.SHARD_SUFFIX) for e in entries)
    has_dirs = any(os.path.isdir(os.path.join(path, e)) for e in entries)
    return has_dirs and not has_shards


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
):
    """Batches of `(images, labels)` for evaluation (linear probe, kNN).

    Two layouts:

    - a folder of class sub-folders (`path/CLASS/*.jpg`): class ids follow
      the sorted class folder names;
    - TFRecord shards (glob, folder or list) with an integer feature
      `label_feature` (the first value is used), e.g. the demo dataset's
      `label_shape` / `label_color` / `label_count`; class names come from
      the shard folder's `manifest.json` (`metadata.class_names`) when
      present, else `None`.

    Args:
        path: class folder, shard glob / folder, or list of shard files.
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

    Returns:
        `(dataset, class_names)`: `dataset` yields `(images, labels int32)`
        and has attribute `corrupt_records`; `class_names` is a list or
        `None`.

    Example:

    >>> ds, names = labelled_image_dataset("demo/test", 64, 128,
    ...                                    label_feature="label_shape")
    ... # doctest: +SKIP
    """
    counter = counter or CorruptRecordCounter()
    if deterministic and training and seed is None:
        seed = 0
    if _is_class_folder(path):
        root = os.fspath(path)
        class_names = sorted(
            d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
        )
        paths, labels = [], []
        for label, name in enumerate(class_names):
            for file in sorted(os.listdir(os.path.join(root, name))):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(root, name, file))
                    labels.append(label)
        if not paths:
            raise FileNotFoundError(
                f"No images in the class folders of {root!r}."
            )
        records = tf.data.Dataset.from_tensor_slices(
            (paths, tf.constant(labels, tf.int32))
        )
        records = records.shard(process_count, process_index)
        if training:
            records = records.shuffle(
                len(paths), seed=seed, reshuffle_each_iteration=True
            )

        def load(record):
            file, label = record
            return tf.io.read_file(file), label, tf.constant(0, tf.int32)

    else:
        files = _shard_files(list_shards(path), process_index, process_count)
        class_names = _manifest_class_names(files, label_feature)
        records = _record_stream(
            files,
            counter,
            training,
            seed,
            shuffle_buffer,
            8,
            deterministic,
            repeat=False,
        )
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

    ds = _image_pipeline(
        records,
        load,
        tf.TensorSpec((), tf.int32),
        image_size,
        training,
        seed,
        False,
        None,
        transforms.DEFAULT_RATIO,
        counter,
        deterministic,
        resize_method=resize_method,
    )
    ds = _finish(
        ds, batch_size, drop_remainder, counter, deterministic, normalize
    )
    return ds, class_names
