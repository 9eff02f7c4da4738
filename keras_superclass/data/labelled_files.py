"""Labelled image files: class folders and `file,label[,split]` tables.

Each listing returns `(paths, labels, class_names)` for
`labelled_image_dataset`.
"""

import csv
import os

from keras_superclass.data import schema
from keras_superclass.utils.constants import IMAGE_EXTENSIONS


def is_class_folder(path):
    path = os.fspath(path)
    if not os.path.isdir(path):
        return False
    entries = os.listdir(path)
    has_shards = any(e.endswith(schema.SHARD_SUFFIX) for e in entries)
    has_dirs = any(os.path.isdir(os.path.join(path, e)) for e in entries)
    return has_dirs and not has_shards


def class_folder_files(path):
    """`(paths, labels, class_names)` of a folder of class folders."""
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
        raise FileNotFoundError(f"No images in the class folders of {root!r}.")
    return paths, labels, class_names


def is_label_table(path):
    return isinstance(path, str | os.PathLike) and os.fspath(
        path
    ).lower().endswith((".csv", ".tsv"))


def _read_table(path):
    """`(rows as dicts, header)` of a CSV (or, by its suffix, TSV) table."""
    with open(path, newline="", encoding="utf-8") as f:
        delimiter = "\t" if os.fspath(path).lower().endswith(".tsv") else ","
        reader = csv.DictReader(f, delimiter=delimiter)
        return list(reader), reader.fieldnames or []


def label_table_files(path, split):
    """`(paths, labels, class_names)` of a `file,label[,split]` table.

    Files are relative to the table's folder; class ids follow the sorted
    label names of the whole table, so every split maps them alike.
    """
    path = os.fspath(path)
    rows, _ = _read_table(path)
    columns = set(rows[0]) if rows else set()
    if not {"file", "label"} <= columns:
        raise ValueError(
            f"{path} needs the columns 'file' and 'label' (optionally "
            f"'split'); it has {sorted(columns)}."
        )
    for number, row in enumerate(rows, start=2):  # line 1: the header
        blank = [c for c in ("file", "label") if not (row[c] or "").strip()]
        if blank:
            raise ValueError(
                f"{path}, line {number}: the {' and '.join(map(repr, blank))}"
                f" column is empty. Fill it in or remove the row."
            )
    splits = sorted({r["split"] for r in rows}) if "split" in columns else []
    if splits and split not in splits:
        raise ValueError(
            f"{path} has a 'split' column ({splits}); choose one with "
            f"split= (probe: --train-split / --test-split), got {split!r}."
        )
    class_names = sorted({r["label"] for r in rows})
    index = {name: i for i, name in enumerate(class_names)}
    root = os.path.dirname(os.path.abspath(path))
    kept = [r for r in rows if not splits or r["split"] == split]
    paths = [os.path.join(root, r["file"]) for r in kept]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} file(s) of {path} do not exist, e.g. "
            f"{missing[0]!r}: the 'file' column is relative to the table's "
            f"folder {root!r}."
        )
    return paths, [index[r["label"]] for r in kept], class_names


def check_separate_splits(train, test, train_split, test_split):
    """Refuses a test set that would be the training set itself.

    One labels table serves as both only through its `split` column, with
    different values for the two.
    """
    if not (is_label_table(train) and is_label_table(test)):
        return
    if os.path.abspath(train) != os.path.abspath(test):
        return
    if "split" not in _read_table(train)[1]:
        raise ValueError(
            f"{os.fspath(train)!r} has no 'split' column, so its test images "
            f"would be its training images. Add a 'split' column (train / "
            f"test) or give separate test images (test= / --test)."
        )
    if train_split == test_split:
        raise ValueError(
            f"The training and test rows of {os.fspath(train)!r} are both "
            f"split {train_split!r}; choose different splits."
        )
