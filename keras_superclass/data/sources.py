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

import csv
import dataclasses
import glob
import os
import posixpath
import tarfile
import zlib

from keras_superclass.data import schema
from keras_superclass.data.captions import read_json_lines
from keras_superclass.utils.constants import IMAGE_EXTENSIONS

CAPTION_EXTENSION = ".txt"


@dataclasses.dataclass
class RawRecord:
    """One input sample before checking.

    Attributes:
        key: unique id of the sample.
        image: encoded image bytes, or `None` when missing.
        caption: caption as `str` or raw bytes, or `None` when missing.
        extra: optional dict `name -> list of int` of extra features.
        skip_reason: set when the source already knows the sample is bad.
        name: where the sample comes from, as the manifest lists it when
            the sample is skipped (e.g. the image path of a captions
            table); default `key`.
    """

    key: str
    image: bytes | None = None
    caption: str | bytes | None = None
    extra: dict | None = None
    skip_reason: str | None = None
    name: str | None = None


class Source:
    """Base class: `tasks()` lists the shards, `read(task)` streams one."""

    def tasks(self):
        raise NotImplementedError

    def read(self, task):
        raise NotImplementedError

    def describe(self):
        """A JSON-able description recorded in the manifest."""
        return {"type": type(self).__name__}

    def explain_skip(self, reason, name):
        """Why the sample `name` was skipped for `reason` and how to fix
        it, in a sentence, or `None`: the writer's error when nothing at
        all was written shows it."""
        return None


def _chunks(n, size):
    size = max(1, int(size))
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def _is_unsafe_name(name):
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    parts = name.replace("\\", "/").split("/")
    return ".." in parts


def _read_table(path, columns):
    """Rows of a CSV / JSONL / Parquet file as dicts of the given columns.

    Text is decoded with `surrogateescape`, so invalid UTF-8 survives to the
    writer, which counts it as `invalid_utf8_caption` instead of crashing.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Captions file {path!r} does not exist. Pass the CSV, JSONL or "
            f"Parquet file that maps image files to captions."
        )
    lower = path.lower()
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        rows = [
            row for _, row in read_json_lines(path, errors="surrogateescape")
        ]
    elif lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif lower.endswith((".csv", ".tsv")):
        delimiter = "\t" if lower.endswith(".tsv") else ","
        with open(
            path, encoding="utf-8", errors="surrogateescape", newline=""
        ) as f:
            rows = list(csv.DictReader(f, delimiter=delimiter))
    else:
        raise ValueError(
            f"Unknown captions file type {path!r}: use .csv, .tsv, .jsonl "
            f"or .parquet."
        )
    if rows:
        missing = [c for c in columns if c and c not in rows[0]]
        if missing:
            raise ValueError(
                f"Captions file {path!r} has no column(s) {missing}; its "
                f"columns are {sorted(rows[0])}. Set --image-column / "
                f"--caption-column."
            )
    return rows


class FolderSource(Source):
    """A folder of images with a captions table or `.txt` side files.

    Args:
        image_dir: folder holding the images (sub-folders allowed).
        captions_file: CSV / TSV / JSONL / Parquet file with one row per
            image, or `None` to pair each image with `NAME.txt` beside it.
        image_column: column holding the image path relative to `image_dir`.
        caption_column: column holding the caption.
        key_column: optional column holding a unique key (default: the
            image path without extension).
        records_per_shard: rows per output shard.

    Example (not run as a doctest: needs image
    files, tar files or encoded images):

    >>> source = FolderSource("images/", "captions.csv")  # doctest: +SKIP
    >>> write_shards(source, "shards/")  # doctest: +SKIP
    """

    def __init__(
        self,
        image_dir,
        captions_file=None,
        image_column="file",
        caption_column="caption",
        key_column=None,
        records_per_shard=1000,
    ):
        self.image_dir = os.path.abspath(os.fspath(image_dir))
        if not os.path.isdir(self.image_dir):
            raise FileNotFoundError(
                f"Image folder {image_dir!r} does not exist."
            )
        self.captions_file = (
            os.path.abspath(os.fspath(captions_file)) if captions_file else None
        )
        self.image_column = image_column
        self.caption_column = caption_column
        self.key_column = key_column
        self.records_per_shard = int(records_per_shard)
        if self.captions_file:
            table = _read_table(
                self.captions_file, [image_column, caption_column, key_column]
            )
            self.rows = [
                (
                    str(row.get(key_column) or "") if key_column else "",
                    str(row.get(image_column) or ""),
                    row.get(caption_column),
                )
                for row in table
            ]
        else:
            files = []
            for root, _, names in os.walk(self.image_dir):
                for name in names:
                    if name.lower().endswith(IMAGE_EXTENSIONS):
                        rel = os.path.relpath(
                            os.path.join(root, name), self.image_dir
                        )
                        files.append(rel.replace(os.sep, "/"))
            self.rows = [("", rel, None) for rel in sorted(files)]

    def tasks(self):
        return _chunks(len(self.rows), self.records_per_shard)

    def read(self, task):
        start, stop = task
        for key, rel, caption in self.rows[start:stop]:
            key = key or os.path.splitext(rel)[0]
            yield self._read_row(key, rel, caption)

    def _read_row(self, key, rel, caption):
        def skip(reason):
            return RawRecord(key, skip_reason=reason, name=rel)

        if not rel or _is_unsafe_name(rel):
            return skip(schema.UNSAFE_MEMBER_NAME)
        path = os.path.join(self.image_dir, rel)
        if self.captions_file is None:
            txt = os.path.splitext(path)[0] + CAPTION_EXTENSION
            if not os.path.exists(txt):
                return skip(schema.MISSING_CAPTION)
            with open(txt, "rb") as f:
                caption = f.read()
        if caption is None or (
            isinstance(caption, float) and caption != caption
        ):
            return skip(schema.MISSING_CAPTION)
        try:
            with open(path, "rb") as f:
                image = f.read()
        except OSError:
            return skip(schema.MISSING_IMAGE)
        return RawRecord(key, image=image, caption=caption, name=rel)

    def explain_skip(self, reason, name):
        if reason == schema.MISSING_CAPTION and self.captions_file is None:
            txt = os.path.splitext(name)[0] + CAPTION_EXTENSION
            return (
                f"image {name!r} has no caption file {txt!r} beside it; "
                f"pass the table that maps images to captions (--captions)."
            )
        if reason != schema.MISSING_IMAGE or not self.captions_file:
            return None
        text = (
            f"image {name!r} was looked for at "
            f"{os.path.join(self.image_dir, name)!r}, which does not exist: "
            f"the {self.image_column!r} column of "
            f"{os.path.basename(self.captions_file)!r} holds paths relative "
            f"to the images folder (--images / image_dir), here "
            f"{self.image_dir!r}."
        )
        # Where such paths are often relative to instead.
        for folder in (os.path.dirname(self.captions_file), os.getcwd()):
            if os.path.isfile(os.path.join(folder, name)):
                return f"{text} It is in {folder!r}: pass that as --images."
        return (
            f"{text} Pass as --images the folder these paths are relative "
            f"to, or rewrite the {self.image_column!r} column."
        )

    def describe(self):
        return {
            "type": "folder",
            "image_dir": self.image_dir,
            "captions_file": self.captions_file,
            "image_column": self.image_column,
            "caption_column": self.caption_column,
            "key_column": self.key_column,
            "records_per_shard": self.records_per_shard,
            "num_rows": len(self.rows),
        }


def _split_key(name):
    """WebDataset convention: key = dir + basename up to its first dot."""
    directory, base = posixpath.split(name)
    stem, dot, ext = base.partition(".")
    key = posixpath.join(directory, stem) if directory else stem
    return key, ("." + ext.lower()) if dot else ""


class TarSource(Source):
    """WebDataset tar shards (img2dataset output): one output shard per tar.

    Members are grouped by key (`dir/name` up to the first dot of the base
    name); a group needs an image (`.jpg`, `.jpeg`, `.png`, `.webp`, `.bmp`,
    `.gif`) and a `.txt` caption. Nothing is extracted to disk. Members with
    an absolute name, a `..` component, or that are links/devices are
    refused and counted as `unsafe_member_name`; a tar that ends early or is
    damaged counts one `corrupt_tar` and keeps the samples read before.

    Args:
        tar_files: a path, a glob pattern, or a list of them.

    Example (not run as a doctest: needs image
    files, tar files or encoded images):

    >>> write_shards(TarSource("laion/*.tar"), "shards/", workers=4)
    ... # doctest: +SKIP
    """

    def __init__(self, tar_files):
        if isinstance(tar_files, str | os.PathLike):
            tar_files = [tar_files]
        paths = []
        for item in tar_files:
            item = os.fspath(item)
            matched = sorted(glob.glob(item)) if glob.has_magic(item) else []
            if matched:
                paths.extend(matched)
            elif os.path.exists(item):
                paths.append(item)
            else:
                raise FileNotFoundError(f"No tar file matches {item!r}.")
        self.tar_files = [os.path.abspath(p) for p in paths]

    def tasks(self):
        return list(self.tar_files)

    def read(self, task):
        tar_name = os.path.basename(task)
        for record in self._read_tar(task):
            if record.name is None:
                record.name = f"{tar_name}:{record.key}"
            yield record

    def _read_tar(self, task):
        groups = {}

        def finish(key, group):
            if group.get("unsafe"):
                return RawRecord(key, skip_reason=schema.UNSAFE_MEMBER_NAME)
            if group.get("image") is None:
                return RawRecord(key, skip_reason=schema.MISSING_IMAGE)
            if group.get("caption") is None:
                return RawRecord(key, skip_reason=schema.MISSING_CAPTION)
            return RawRecord(
                key, image=group["image"], caption=group["caption"]
            )

        try:
            with tarfile.open(task, mode="r|*") as tar:
                previous = None
                for member in tar:
                    if member.isdir():
                        continue
                    name = member.name
                    unsafe = _is_unsafe_name(name) or not member.isfile()
                    key, ext = _split_key(name.lstrip("/"))
                    if unsafe:
                        yield RawRecord(
                            name, skip_reason=schema.UNSAFE_MEMBER_NAME
                        )
                        continue
                    if key != previous and previous is not None:
                        # img2dataset writes one key's members together;
                        # emit the finished groups, keep incomplete ones.
                        for done in [
                            k
                            for k, g in groups.items()
                            if "image" in g and "caption" in g
                        ]:
                            yield finish(done, groups.pop(done))
                    previous = key
                    group = groups.setdefault(key, {})
                    if ext in IMAGE_EXTENSIONS:
                        group["image"] = tar.extractfile(member).read()
                    elif ext == CAPTION_EXTENSION:
                        group["caption"] = tar.extractfile(member).read()
                end = tar.offset
            if not _has_end_marker(task, end):
                raise tarfile.ReadError("archive ends without its end marker")
        except (tarfile.TarError, EOFError, OSError, zlib.error):
            name = os.path.basename(task)
            yield RawRecord(name, skip_reason=schema.CORRUPT_TAR, name=name)
        for key, group in groups.items():
            yield finish(key, group)

    def describe(self):
        return {"type": "tar", "tar_files": self.tar_files}


def _has_end_marker(path, offset):
    """False when an uncompressed tar stops before its end-of-archive blocks
    (`tarfile` reads a tar cut at a header boundary as a shorter one)."""
    with open(path, "rb") as f:
        if f.read(6).startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
            return True  # Compressed: the decompressor reports truncation.
        f.seek(offset)
        tail = f.read(1024)
    return len(tail) == 1024 and not tail.strip(b"\0")


class RecordListSource(Source):
    """Records already in memory: dicts with `key`, `image`, `caption` (and
    optionally `extra`), or `RawRecord`s.

    Args:
        records: the list of records.
        records_per_shard: records per output shard.

    Example (not run as a doctest: needs image
    files, tar files or encoded images):

    >>> source = RecordListSource(
    ...     [{"key": "0", "image": png_bytes, "caption": "a cat"}])
    ... # doctest: +SKIP
    >>> write_shards(source, "shards/")  # doctest: +SKIP
    """

    def __init__(self, records, records_per_shard=1000):
        self.records = [
            r if isinstance(r, RawRecord) else RawRecord(**r) for r in records
        ]
        self.records_per_shard = int(records_per_shard)

    def tasks(self):
        return _chunks(len(self.records), self.records_per_shard)

    def read(self, task):
        start, stop = task
        yield from self.records[start:stop]

    def describe(self):
        return {
            "type": "records",
            "num_records": len(self.records),
            "records_per_shard": self.records_per_shard,
        }


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
