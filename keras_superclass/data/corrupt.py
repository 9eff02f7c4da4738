"""Plants corrupt data on purpose, to show (and test) that the pipeline
skips and counts it instead of crashing or hiding it.

Example (skipped as a doctest: needs existing shards and an encoded image):

>>> write_corrupt_shard("shards/zz-corrupt.tfrecord", good_image=png_bytes)
... # doctest: +SKIP
>>> truncate_file("shards/shard-00001-of-00004.tfrecord", 0.5)
... # doctest: +SKIP
"""

import os

from keras_superclass.data import schema

# Kind of corruption -> (image bytes or None for the good image, caption).
CORRUPT_RECORDS = {
    schema.UNDECODABLE_IMAGE: (b"\xff\xd8\xff this is not a JPEG", b"a cat"),
    schema.EMPTY_CAPTION: (None, b""),
    "whitespace_caption": (None, b" \t\n "),
    schema.INVALID_UTF8_CAPTION: (None, b"caf\xe9 au lait"),
}


def write_corrupt_shard(path, good_image, kinds=None, good_records=1):
    """Writes a TFRecord shard with `good_records` valid records followed
    by one record of each corruption kind (bypassing the writer's checks).

    Args:
        path: output `.tfrecord` file.
        good_image: encoded bytes of a valid image.
        kinds: corruption kinds (keys of `CORRUPT_RECORDS`); default all.
        good_records: valid records written first.

    Returns:
        Dict `reason -> count` the reader should report for this shard
        (whitespace-only captions count as `empty_caption`).
    """
    import tensorflow as tf

    kinds = list(CORRUPT_RECORDS) if kinds is None else list(kinds)
    expected = {}
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.TFRecordWriter(tmp) as writer:
        items = [
            (good_image, f"a valid caption {i}".encode())
            for i in range(good_records)
        ]
        for kind in kinds:
            image, caption = CORRUPT_RECORDS[kind]
            items.append((good_image if image is None else image, caption))
            reason = (
                schema.EMPTY_CAPTION if kind == "whitespace_caption" else kind
            )
            expected[reason] = expected.get(reason, 0) + 1
        for i, (image, caption) in enumerate(items):
            example = schema.make_example(image, "x", f"corrupt-{i}", 1, 1)
            # Set the raw caption bytes (make_example would encode a str).
            example.features.feature[schema.CAPTION].bytes_list.value[0] = (
                caption
            )
            writer.write(example.SerializeToString())
    os.replace(tmp, path)
    return dict(sorted(expected.items()))


def truncate_file(path, fraction=0.5):
    """Cuts a file to `fraction` of its size (simulates a partial copy).

    A truncated TFRecord shard is read up to the cut and counted once as
    `truncated_shard` by the reader.
    """
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(max(1, int(size * fraction)))
