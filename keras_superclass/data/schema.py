"""The record schema of the image-caption TFRecord shards.

Every shard is a TFRecord file of serialised `tf.train.Example` protos with
these features (schema version `SCHEMA_VERSION`):

| feature   | type        | content                                          |
|-----------|-------------|--------------------------------------------------|
| `image`   | bytes       | the encoded image (JPEG, PNG, ...), as stored   |
| `caption` | bytes       | the caption, UTF-8, stripped of outer whitespace |
| `key`     | bytes       | a unique id of the sample (file name, tar key)   |
| `width`   | int64       | width of the ORIGINAL image in pixels            |
| `height`  | int64       | height of the ORIGINAL image in pixels           |

plus any number of optional int64-list features (`extra_features`), e.g.
`synsets` (CatLIP WordNet synset ids) or the demo dataset's probe labels
`label_shape`, `label_color`, `label_count`. Extra feature names must not
clash with the required ones.

Next to the shards, `manifest.json` lists the shards, their record counts,
the skipped inputs by reason, the schema version and the writer's arguments.

Example:

>>> example = make_example(b"<jpeg bytes>", "a red circle", "0001", 64, 48)
>>> parse_example(example.SerializeToString())["caption"].numpy()
b'a red circle'
"""

SCHEMA_VERSION = 1

IMAGE = "image"
CAPTION = "caption"
KEY = "key"
WIDTH = "width"
HEIGHT = "height"
REQUIRED_FEATURES = (IMAGE, CAPTION, KEY, WIDTH, HEIGHT)

MANIFEST_NAME = "manifest.json"
SHARD_SUFFIX = ".tfrecord"

# Reasons an input is skipped; the writer's manifest and the reader's
# `CorruptRecordCounter` count them under these names.
MISSING_IMAGE = "missing_image"
MISSING_CAPTION = "missing_caption"
UNDECODABLE_IMAGE = "undecodable_image"
EMPTY_CAPTION = "empty_caption"
INVALID_UTF8_CAPTION = "invalid_utf8_caption"
UNSAFE_MEMBER_NAME = "unsafe_member_name"
CORRUPT_TAR = "corrupt_tar"
TRUNCATED_SHARD = "truncated_shard"
CORRUPT_SHARD = "corrupt_shard"


def _tf():
    import tensorflow as tf

    return tf


def make_example(image, caption, key, width, height, extra_features=None):
    """Builds the `tf.train.Example` of one sample.

    Args:
        image: encoded image bytes.
        caption: caption `str` (or UTF-8 bytes).
        key: unique sample id, `str` or bytes.
        width: original image width in pixels.
        height: original image height in pixels.
        extra_features: optional dict `name -> list of int` stored as int64
            lists.

    Returns:
        A `tf.train.Example`.
    """
    tf = _tf()
    train = tf.train

    def _bytes(value):
        if isinstance(value, str):
            value = value.encode("utf-8")
        return train.Feature(bytes_list=train.BytesList(value=[bytes(value)]))

    def _ints(values):
        return train.Feature(
            int64_list=train.Int64List(value=[int(v) for v in values])
        )

    feature = {
        IMAGE: _bytes(image),
        CAPTION: _bytes(caption),
        KEY: _bytes(key),
        WIDTH: _ints([width]),
        HEIGHT: _ints([height]),
    }
    for name, values in (extra_features or {}).items():
        if name in REQUIRED_FEATURES:
            raise ValueError(
                f"Extra feature {name!r} clashes with a required feature of "
                f"the shard schema ({', '.join(REQUIRED_FEATURES)}); rename it."
            )
        if isinstance(values, int):
            values = [values]
        feature[name] = _ints(values)
    return train.Example(features=train.Features(feature=feature))


def feature_spec(extra_features=None, required=REQUIRED_FEATURES):
    """The parsing spec of the schema for `tf.io.parse_single_example`.

    Args:
        extra_features: names of extra int64-list features to parse (as
            variable-length, densified with -1 by `parse_example`), or a dict
            `name -> fixed length`.
        required: which required features to parse.
    """
    tf = _tf()
    spec = {
        IMAGE: tf.io.FixedLenFeature([], tf.string),
        CAPTION: tf.io.FixedLenFeature([], tf.string, default_value=""),
        KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
        WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    }
    spec = {name: spec[name] for name in required}
    if isinstance(extra_features, dict):
        for name, length in extra_features.items():
            spec[name] = tf.io.FixedLenFeature([int(length)], tf.int64)
    else:
        for name in extra_features or ():
            spec[name] = tf.io.VarLenFeature(tf.int64)
    return spec


def parse_example(serialized, extra_features=None):
    """Parses one serialised record into a dict of tensors.

    Variable-length extra features come back dense, padded with -1.
    """
    tf = _tf()
    parsed = tf.io.parse_single_example(
        serialized, feature_spec(extra_features)
    )
    for name, value in list(parsed.items()):
        if isinstance(value, tf.SparseTensor):
            parsed[name] = tf.sparse.to_dense(value, default_value=-1)
    return parsed
