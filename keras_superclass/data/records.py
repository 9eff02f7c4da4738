"""Shard files to a stream of serialised records.

Lists the shard files (`list_shards`), gives each process its share
(`files_of_process`), reads them in parallel with TensorFlow's native
reader and shuffles when training (`record_stream`). A damaged file (cut
short or failing its checksum) is read up to the damage and counted once
in the reader's `CorruptRecordCounter`, found by accounting for the bytes
each file's records span.
"""

import glob
import os

import keras
import tensorflow as tf

from keras_superclass.data import python_ops
from keras_superclass.data import schema
from keras_superclass.utils.constants import IMAGE_EXTENSIONS

AUTOTUNE = tf.data.AUTOTUNE


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
            _check_holds_shards(item)
            item = os.path.join(item, "*" + schema.SHARD_SUFFIX)
        elif not glob.has_magic(item) and not tf.io.gfile.exists(item):
            raise FileNotFoundError(f"{item!r} does not exist.")
        elif item.lower().endswith(IMAGE_EXTENSIONS):
            raise ValueError(
                f"{item!r} is an image, not a shard file: give a folder of "
                f"class folders, a file,label CSV or shards."
            )
        files.extend(tf.io.gfile.glob(item) if glob.has_magic(item) else [item])
    files = sorted(set(files))
    if not files:
        raise FileNotFoundError(
            f"No shard files match {file_pattern!r}. Write shards with "
            f"`keras-superclass shards` first."
        )
    return files


def _check_holds_shards(folder):
    """A folder of loose images is not a folder of shards: say so."""
    entries = os.listdir(folder)
    if any(e.endswith(schema.SHARD_SUFFIX) for e in entries):
        return
    if any(e.lower().endswith(IMAGE_EXTENSIONS) for e in entries):
        raise FileNotFoundError(
            f"{folder!r} holds images but no shards and no class folders. "
            f"For labelled images put each class's images in a sub-folder "
            f"named after the class (or list them in a file,label CSV); "
            f"for image-caption pairs write shards with `keras-superclass "
            f"shards --images {folder} --captions ...`."
        )


def check_int_feature(files, feature):
    """Raises if the first record of `files` has no int feature `feature`
    (every record would fail to parse, and the data would read as empty).
    """
    try:
        first = next(iter(_record_iterator(files[0])), None)
    except tf.errors.DataLossError:
        return  # damaged: the reader counts and names it
    if first is None:
        return
    example = tf.train.Example.FromString(first)
    found = example.features.feature
    if feature in found and found[feature].HasField("int64_list"):
        return
    ints = sorted(k for k, v in found.items() if v.HasField("int64_list"))
    raise ValueError(
        f"The records of {files[0]!r} have no integer feature {feature!r}; "
        f"their integer features: {ints or 'none'}. Choose one as the "
        f"label (label_feature=, --label-feature)."
    )


def files_of_process(files, process_index, process_count):
    """This process's share of `files`: file `i` goes to process
    `i % process_count` (`None`: the default of
    `default_process_index_and_count`)."""
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


def _file_records(files, counter, options):
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
    if options.training:
        ds = ds.shuffle(
            len(files), seed=options.seed, reshuffle_each_iteration=True
        )
    cycle_length = max(1, min(options.cycle_length, len(files)))
    if options.deterministic:  # Sequential: no order set by timing.
        return ds.interleave(file_dataset, cycle_length, block_length=1)
    return ds.interleave(
        file_dataset,
        cycle_length,
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=False,
    )


def record_stream(files, counter, options):
    """Serialised records of `files` (a `ReadOptions` says how): files and
    records shuffled when training, one pass or (`repeat`) passes forever,
    each pass shuffled anew.

    A repeated stream is built inside `flat_map`, so each iterator gets
    fresh shuffle state and every iterator of the dataset gives the same
    stream (a dataset's own shuffle state runs on across iterators, and
    Keras makes a second iterator after peeking at the first batch on some
    backends: a resumed run would see other data than an uninterrupted one).
    """

    def stream(_=None):
        records = _file_records(files, counter, options)
        if options.training and options.shuffle_buffer:
            records = records.shuffle(
                options.shuffle_buffer,
                seed=options.seed,
                reshuffle_each_iteration=True,
            )
        return records.repeat() if options.repeat else records

    if not options.repeat:
        return stream()
    return tf.data.Dataset.range(1).flat_map(stream)
