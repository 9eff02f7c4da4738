"""`FolderSource`: a folder of images with a captions table or `.txt`
caption files beside the images."""

import csv
import os

from keras_superclass.data import schema
from keras_superclass.data.captions import read_json_lines
from keras_superclass.data.sources.base import CAPTION_EXTENSION
from keras_superclass.data.sources.base import RawRecord
from keras_superclass.data.sources.base import Source
from keras_superclass.data.sources.base import chunks
from keras_superclass.data.sources.base import is_unsafe_name
from keras_superclass.utils.constants import IMAGE_EXTENSIONS


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
        return chunks(len(self.rows), self.records_per_shard)

    def read(self, task):
        start, stop = task
        for key, rel, caption in self.rows[start:stop]:
            key = key or os.path.splitext(rel)[0]
            yield self._read_row(key, rel, caption)

    def _read_row(self, key, rel, caption):
        def skip(reason):
            return RawRecord(key, skip_reason=reason, name=rel)

        if not rel or is_unsafe_name(rel):
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
