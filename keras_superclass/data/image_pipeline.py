"""Records to batches: decode, transform, drop and count bad records, batch.

Three steps, each its own function:

1. `image_transform(options)`: the per-record image step, encoded bytes
   to a `(size, size, 3)` uint8 image (the train or eval transform);
2. `decode_and_transform`: applies a record loader and that transform to
   a stream of records, drops the bad ones and counts them;
3. `batch`: batches, then runs the per-batch step (normalisation and the
   batched label function: one vectorised op per batch is much cheaper
   than one per image) and prefetches.
"""

import tensorflow as tf

from keras_superclass.data import corrupt_records
from keras_superclass.data import python_ops
from keras_superclass.data import schema
from keras_superclass.data import transforms

AUTOTUNE = tf.data.AUTOTUNE


def image_transform(options):
    """The per-record image step of a `ReadOptions`.

    Returns:
        `transform(encoded, index) -> (image_size, image_size, 3) uint8`:
        decodes any JPEG / PNG / GIF / BMP / WebP to RGB, then applies
        the train transform (random resized crop, plus the strong
        augmentation if asked; seeded by `options.seed` and the record
        number `index`, so a resumed run draws the same crops) or the eval
        transform (shorter side to `image_size`, centre crop).
    """
    converter = options.converter
    base_seed = None if options.seed is None else int(options.seed)

    def example_seed(index):
        if base_seed is None:
            return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
        return tf.stack([tf.constant(base_seed, tf.int64), index])

    def transform(encoded, index):
        image = transforms.decode_rgb(encoded)
        return converter.crop(
            image,
            training=options.training,
            seed=example_seed(index) if options.training else None,
            scale=options.crop_scale,
            ratio=options.ratio,
            strong_augment=options.strong_augment,
        )

    return transform


def decode_and_transform(
    records, load, payload_spec, transform, options, counter
):
    """Decodes + transforms records into `(image, payload, code)`; bad
    records are counted and dropped (the kept ones have code 0).

    `load(record) -> (encoded_image, payload, code)` where `code > 0` names
    a bad caption; `transform` is the per-record image step (see
    `image_transform`). Records are numbered in stream order (after
    `options.skip_records` skipped ones); images that fail to decode are
    dropped by `ignore_errors` and counted from the gaps in that numbering
    (the decode map keeps order; unless `options.repeat`, an end marker
    catches failures at the very end).
    """
    size = options.image_size
    image_spec = tf.zeros((size, size, 3), tf.uint8)
    bad_payload = tf.nest.map_structure(
        lambda s: tf.zeros(s.shape, s.dtype), payload_spec
    )
    skip_records = int(options.skip_records)

    # Each record is tagged `(is_end, record)`; a finite stream ends with a
    # marker so failures among its last records are counted too. (`zip`
    # tags without a function call per record: in tf.data those cost tens
    # of microseconds each, a noticeable share of an image's budget.)
    not_end = tf.data.Dataset.from_tensors(tf.constant(False)).repeat()
    records = tf.data.Dataset.zip((not_end, records))
    if not options.repeat:
        end = tf.nest.map_structure(
            lambda s: tf.zeros(s.shape, s.dtype), records.element_spec[1]
        )
        records = records.concatenate(
            tf.data.Dataset.from_tensors((tf.constant(True), end))
        )
    records = records.enumerate()
    if skip_records:
        records = records.skip(skip_records)

    def process(index, element):
        is_end, record = element

        def decode():
            encoded, payload, code = load(record)
            image = tf.cond(
                code > 0, lambda: image_spec, lambda: transform(encoded, index)
            )
            return image, payload, code

        end_code = tf.constant(corrupt_records.END, tf.int32)
        image, payload, code = tf.cond(
            is_end, lambda: (image_spec, bad_payload, end_code), decode
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

    ds = ds.scan(tf.constant(skip_records, tf.int64), count_undecodable)

    def keep(image, payload, code):
        code = tf.cond(
            code > 0,
            lambda: python_ops.py_function(counter._add_code, [code], tf.int32),
            lambda: code,
        )
        return tf.equal(code, 0)

    # Elements keep their (zero) code: `batch` drops it once per batch.
    return ds.filter(keep)


def batch(ds, options, counter, batch_label_fn=None):
    """Batches `(image, payload, code)` elements into `(images, payload)`.

    The per-batch step: normalises the images (if the converter does) and
    turns the payload (captions) into labels with `batch_label_fn`, once
    per batch; then prefetches and attaches `counter` as
    `corrupt_records`.
    """
    ds = ds.batch(options.batch_size, drop_remainder=options.drop_remainder)

    def per_batch(images, payload, codes):
        # `codes` (all zero: bad records are gone) served the bookkeeping.
        if options.converter.normalize:
            images = options.converter.normalization(images)
        if batch_label_fn is not None:
            payload = batch_label_fn(payload)
        return images, payload

    ds = ds.map(per_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.prefetch(AUTOTUNE)
    tf_options = tf.data.Options()
    tf_options.deterministic = bool(options.deterministic)
    ds = ds.with_options(tf_options)
    ds.corrupt_records = counter
    return ds
