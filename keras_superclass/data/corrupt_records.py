"""Accounting of the records a reader skips (corrupt data).

Corrupt data never crashes a run and never passes silently: undecodable
images, blank captions, invalid UTF-8 captions and damaged shard files are
skipped and counted in a `CorruptRecordCounter` (attached to the readers'
datasets as `dataset.corrupt_records`); `CorruptRecordReport` prints the
counts at the end of every epoch. Inside the graph a record carries a
reason code (`caption_code`), turned into a reason name when counted.
"""

import threading

import keras
import tensorflow as tf

from keras_superclass.data import schema

# Reason codes inside the graph: 0 the record is fine, > 0 a bad caption,
# `END` the end-of-stream marker (never counted). Undecodable images raise
# instead and are counted from gaps in the record numbering (see
# `image_pipeline.decode_and_transform`).
OK = 0
EMPTY = 2
INVALID_UTF8 = 3
END = -1
_CODES = {
    EMPTY: schema.EMPTY_CAPTION,
    INVALID_UTF8: schema.INVALID_UTF8_CAPTION,
}


class CorruptRecordCounter:
    """Counts the records a reader skipped, by reason (thread-safe).

    Reasons: `undecodable_image` (also records that do not parse),
    `empty_caption`, `invalid_utf8_caption`, `truncated_shard` and
    `corrupt_shard` (a shard file that ends early or fails its checksum:
    the records before the damage are used, one count per file read).
    Counts accumulate over epochs until `reset()`.

    Example (skipped as a doctest: needs TFRecord shards on disk):

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
        only_when_skipped: no line for an epoch that skipped nothing (e.g.
            a quiet run, or the other processes of a multi-process run).
        prefix: put before each line (e.g. which process reports).

    Example (skipped as a doctest: needs TFRecord shards on disk):

    >>> ds = image_text_dataset("shards/*.tfrecord", 32, label_fn=fn)
    ... # doctest: +SKIP
    >>> model.fit(ds, callbacks=[CorruptRecordReport(ds)])  # doctest: +SKIP
    """

    def __init__(
        self, source, print_fn=print, only_when_skipped=False, prefix=""
    ):
        super().__init__()
        self.counter = getattr(source, "corrupt_records", source)
        if not isinstance(self.counter, CorruptRecordCounter):
            raise ValueError(
                "CorruptRecordReport needs a CorruptRecordCounter or a dataset "
                "made by `image_text_dataset` / `labelled_image_dataset`; got "
                f"{type(source).__name__}."
            )
        self.print_fn = print_fn
        self.only_when_skipped = only_when_skipped
        self.prefix = prefix
        self._last = {}

    def on_epoch_end(self, epoch, logs=None):
        counts = self.counter.counts()
        new = {k: v - self._last.get(k, 0) for k, v in counts.items()}
        self._last = counts
        if self.only_when_skipped and not any(new.values()):
            return
        if counts:
            text = ", ".join(f"{k}={v} (+{new[k]})" for k, v in counts.items())
        else:
            text = "none"
        self.print_fn(
            f"{self.prefix}Epoch {epoch + 1}: corrupt records skipped: {text}"
        )


def caption_code(caption):
    """The reason code (int32 scalar) of a `tf.string` caption: `OK`,
    `EMPTY` (blank) or `INVALID_UTF8`."""
    valid = tf.equal(
        tf.strings.unicode_transcode(
            caption, "UTF-8", "UTF-8", errors="replace"
        ),
        caption,
    )
    blank = tf.strings.regex_full_match(caption, r"[\s\p{Z}]*")
    return tf.where(
        valid, tf.where(blank, EMPTY, OK), tf.cast(INVALID_UTF8, tf.int32)
    )
