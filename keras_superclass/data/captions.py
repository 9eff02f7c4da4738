"""Caption corpora: the one reader of the tools that read caption files.

`CaptionSource` (also `iter_captions`) reads the captions of text, JSON
lines, CSV and TFRecord files, for the vocabulary, document-frequency and
synset tools. TensorFlow is imported only to read TFRecord files.

Formats (by extension; a `.gz` suffix reads any of them compressed):

- `.txt`: one caption per line;
- `.jsonl` / `.json` / `.ndjson`: one JSON object per line, the caption in
  its `caption_column` field; blank lines are skipped;
- `.csv` / `.tsv`: a header row naming `caption_column`;
- `.tfrecord` / `.tfrecords` / `.tfrec` or any other name: serialised
  `tf.train.Example`s with a bytes feature `caption_column`.

Bad records (a line that is not JSON, a missing or non-string caption, a
record that is not an Example, a damaged TFRecord file) are handled in one
of two ways:

- `strict=True`: a `ValueError` naming the file and the line or record,
  and blank lines of text files are skipped (they hold no caption);
- `strict=False` (the default of `iter_captions`, as the document
  frequencies have always counted): the record is skipped and counted in
  `num_skipped`, and every line of a text file is a caption, blank or not.
"""

import csv
import glob
import gzip
import json
import os
import sys

TEXT_EXTENSIONS = (".txt",)
JSONL_EXTENSIONS = (".jsonl", ".json", ".ndjson")
CSV_EXTENSIONS = (".csv", ".tsv")
TFRECORD_EXTENSIONS = (".tfrecord", ".tfrecords", ".tfrec")
_CAPTION_FLAG = "--caption-column"


def expand_caption_files(source):
    """The files of a path, a glob, a folder (its caption files) or a list
    of them; raises `FileNotFoundError` naming what matched nothing."""
    if isinstance(source, list | tuple):
        files = []
        for item in source:
            files.extend(expand_caption_files(item))
        return files
    source = os.fspath(source)
    if glob.has_magic(source):
        files = sorted(glob.glob(source))
        if not files:
            raise FileNotFoundError(f"No file matches {source!r}.")
        return files
    if not os.path.exists(source):
        raise FileNotFoundError(f"Caption source {source!r} does not exist.")
    if os.path.isdir(source):
        files = sorted(
            os.path.join(source, name)
            for name in os.listdir(source)
            if file_format(name) is not None
        )
        if not files:
            raise FileNotFoundError(
                f"{source!r} holds no caption file (.txt, .jsonl, .csv, "
                f".tfrecord)."
            )
        return files
    return [source]


def file_format(path):
    """`"text"`, `"jsonl"`, `"csv"`, `"tfrecord"` or `None` (unknown)."""
    name = os.fspath(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for fmt, extensions in (
        ("text", TEXT_EXTENSIONS),
        ("jsonl", JSONL_EXTENSIONS),
        ("csv", CSV_EXTENSIONS),
        ("tfrecord", TFRECORD_EXTENSIONS),
    ):
        if name.endswith(extensions):
            return fmt
    return None


def open_text(path, errors="strict"):
    """Opens a UTF-8 text file for reading, gunzipping a `.gz` one."""
    if os.fspath(path).lower().endswith(".gz"):
        return gzip.open(
            path, "rt", encoding="utf-8", errors=errors, newline=""
        )
    return open(path, encoding="utf-8", errors=errors, newline="")


def parse_json_line(line, path, number):
    """The JSON object of line `number` of `path`, or a `ValueError` that
    names the file and the line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}:{number} is not a JSON line ({error.msg}): "
            f"{line.strip()[:80]!r}. Each line of a JSON-lines file must "
            f"hold one JSON object; fix or remove that line."
        ) from error
    if not isinstance(record, dict):
        raise ValueError(
            f"{path}:{number} holds a JSON {type(record).__name__}, not an "
            f"object with named fields."
        )
    return record


def read_json_lines(path, errors="strict"):
    """Yields `(line number, object)` of a JSON-lines file (blank lines
    skipped); a bad line raises a `ValueError` naming file and line."""
    with open_text(path, errors) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, parse_json_line(line, path, number)


class CaptionSource:
    """Iterable over the captions of text, JSONL, CSV or TFRecord files.

    See the module docstring for the formats and for `strict`.

    Args:
        source: a file, a glob, a folder or a list of them.
        caption_column: the caption field / column / feature.
        strict: raise on a bad record (naming file and line) instead of
            skipping and counting it.

    Attributes:
        num_read: captions yielded by the last full iteration.
        num_skipped: records skipped by it (always 0 when strict).
    """

    def __init__(self, source, caption_column="caption", strict=False):
        self.files = expand_caption_files(source)
        self.caption_column = caption_column
        self.strict = bool(strict)
        self.num_read = 0
        self.num_skipped = 0

    def __iter__(self):
        self.num_read = 0
        self.num_skipped = 0
        for path in self.files:
            fmt = file_format(path) or "tfrecord"
            reader = getattr(self, f"_read_{fmt}")
            for caption in reader(path):
                self.num_read += 1
                yield caption

    @property
    def is_tfrecord(self):
        """Whether every file is a TFRecord shard."""
        return all(
            (file_format(p) or "tfrecord") == "tfrecord" for p in self.files
        )

    def _bad(self, message):
        """Raises `message` when strict, else counts a skipped record."""
        if self.strict:
            raise ValueError(message)
        self.num_skipped += 1

    def _read_text(self, path):
        with open_text(path) as f:
            for line in f:
                line = line.rstrip("\r\n")
                if line.strip() or not self.strict:
                    yield line

    def _read_jsonl(self, path):
        column = self.caption_column
        with open_text(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = parse_json_line(line, path, number)
                except ValueError as error:
                    self._bad(str(error))
                    continue
                caption = record.get(column)
                if column not in record:
                    self._bad(
                        f"{path}:{number} has no {column!r} field; pass the "
                        f"caption field with `{_CAPTION_FLAG}`."
                    )
                elif not isinstance(caption, str):
                    self._bad(
                        f"{path}:{number}: the {column!r} field holds a "
                        f"{type(caption).__name__}, not a string caption."
                    )
                else:
                    yield caption

    def _read_csv(self, path):
        delimiter = "\t" if ".tsv" in path.lower() else ","
        with open_text(path) as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            if self.caption_column not in (reader.fieldnames or ()):
                raise ValueError(
                    f"{path} has no column {self.caption_column!r} (columns: "
                    f"{reader.fieldnames}); pass the right `caption_column` "
                    f"(`{_CAPTION_FLAG}`)."
                )
            for row in reader:
                caption = row.get(self.caption_column)
                if caption is None:
                    self._bad(
                        f"{path}:{reader.line_num} has no value in column "
                        f"{self.caption_column!r} (a short row)."
                    )
                    continue
                yield caption

    def _read_tfrecord(self, path):
        import tensorflow as tf

        compression = "GZIP" if path.endswith(".gz") else None
        records = iter(
            tf.data.TFRecordDataset(path, compression).as_numpy_iterator()
        )
        column = self.caption_column
        number = 0
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except tf.errors.OpError as error:
                # A truncated or corrupt file: the rest of it is unreadable.
                message = (
                    f"{path}: stopped reading at a corrupt record after "
                    f"{number} records ({type(error).__name__})."
                )
                if not self.strict:
                    print(f"warning: {message}", file=sys.stderr)
                self._bad(message)
                return
            number += 1
            try:
                example = tf.train.Example.FromString(record)
                values = example.features.feature[column].bytes_list.value
                caption = values[0].decode("utf-8")
            except Exception:  # Not an Example, no caption, not UTF-8.
                self._bad(
                    f"{path}: record {number} is not a tf.train.Example "
                    f"with a UTF-8 bytes feature {column!r} (pass the "
                    f"caption feature with `{_CAPTION_FLAG}`; name text "
                    f"files .txt)."
                )
                continue
            yield caption

    def _parse_records(self, records):
        import numpy as np
        import tensorflow as tf

        captions, valid = [], []
        column = self.caption_column
        for record in records:
            try:
                example = tf.train.Example.FromString(record)
                values = example.features.feature[column].bytes_list.value
                caption = values[0]
                caption.decode("utf-8")
            except Exception:  # Not an Example, no caption, not UTF-8.
                captions.append(b"")
                valid.append(False)
                continue
            captions.append(caption)
            valid.append(True)
        return np.array(captions, dtype=object), np.array(valid, dtype=bool)

    def tfrecord_batches(self, batch_size=1024):
        """Batches `(captions (B,), valid (B,) bool)` read in the graph.

        Faster than iterating for large shards: records are read and
        batched by tf.data, only the caption is decoded (in one Python
        call per batch). Invalid records have `valid=False`; a corrupt
        file tail is skipped with a logged warning (not counted).
        """
        import tensorflow as tf

        from keras_superclass.data import python_ops

        def read(path):
            compression = tf.where(
                tf.strings.regex_full_match(path, r".*\.gz"), "GZIP", ""
            )
            return tf.data.TFRecordDataset(path, compression).ignore_errors(
                log_warning=True
            )

        def parse(records):
            captions, valid = python_ops.numpy_function(
                self._parse_records,
                [records],
                (tf.string, tf.bool),
                stateful=False,
            )
            return (
                tf.ensure_shape(captions, [None]),
                tf.ensure_shape(valid, [None]),
            )

        files = tf.data.Dataset.from_tensor_slices(self.files)
        records = files.interleave(
            read,
            cycle_length=min(4, len(self.files)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
        return records.batch(batch_size).map(
            parse, num_parallel_calls=tf.data.AUTOTUNE
        )


def iter_captions(source, caption_column="caption", strict=False):
    """Iterates the captions of a file, a glob, a directory or a list.

    Returns a `CaptionSource` (iterable; after iterating, `num_read` and
    `num_skipped` tell how many captions were read and records skipped).
    See the module docstring for the formats and `strict`.

    Example (skipped as a doctest: needs TFRecord shards on disk):
    >>> captions = iter_captions("shards/train-*.tfrecord")  # doctest: +SKIP
    >>> n = sum(1 for _ in captions); captions.num_skipped  # doctest: +SKIP
    """
    return CaptionSource(source, caption_column=caption_column, strict=strict)


__all__ = [
    "CaptionSource",
    "expand_caption_files",
    "file_format",
    "iter_captions",
    "open_text",
    "read_json_lines",
]
