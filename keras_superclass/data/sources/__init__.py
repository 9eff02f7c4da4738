"""Inputs of the shard writer: where image-caption pairs come from.

A source splits its input into independent *tasks* (one per output shard,
picklable, so a process pool can run them) and reads each task as a stream
of `RawRecord`s. Checking and encoding the records is the writer's job; a
source only marks what it already knows is wrong (`skip_reason`).

Sources:

- `FolderSource`: a folder of images plus a captions table (CSV, JSONL or
  Parquet; column names configurable), or, without a table, one `.txt`
  caption file beside each image (the img2dataset "files" layout).
- `TarSource`: WebDataset tar shards as written by img2dataset (`KEY.jpg` /
  `KEY.png` + `KEY.txt`, grouped by key). Read with `tarfile` without
  extracting; members with absolute names, `..` or links are refused.
- `RecordListSource`: records already in memory (tests, generators).
"""

import os

from keras_superclass.data.sources.base import RawRecord
from keras_superclass.data.sources.base import Source
from keras_superclass.data.sources.folder import FolderSource
from keras_superclass.data.sources.records import RecordListSource
from keras_superclass.data.sources.tar import TarSource


def as_source(
    source,
    captions_file=None,
    image_column="file",
    caption_column="caption",
    key_column=None,
    records_per_shard=1000,
):
    """Turns what `write_shards` was given into a `Source`.

    A `Source` passes through; a folder becomes a `FolderSource`; a `.tar`
    path, a glob of tars or a list of tars becomes a `TarSource`; a list of
    dicts becomes a `RecordListSource`.
    """
    if isinstance(source, Source):
        return source
    if (
        isinstance(source, list | tuple)
        and source
        and isinstance(source[0], dict | RawRecord)
    ):
        return RecordListSource(source, records_per_shard)
    if isinstance(source, str | os.PathLike) and os.path.isdir(source):
        return FolderSource(
            source,
            captions_file,
            image_column=image_column,
            caption_column=caption_column,
            key_column=key_column,
            records_per_shard=records_per_shard,
        )
    return TarSource(source)


__all__ = [
    "FolderSource",
    "RawRecord",
    "RecordListSource",
    "Source",
    "TarSource",
    "as_source",
]
