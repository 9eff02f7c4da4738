"""tf.data input pipeline: shards, readers, transforms, demo dataset.

TensorFlow is used here on every Keras backend (Keras feeds tf.data into
JAX and PyTorch). Public API:

- `write_shards`, `read_manifest`: image-caption pairs -> TFRecord shards
  (schema in `keras_superclass.data.schema`), from a folder + captions table,
  WebDataset tars, or records in memory (`FolderSource`, `TarSource`,
  `RecordListSource`).
- `image_text_dataset`: shards -> `(images, token_ids)` training batches.
- `labelled_image_dataset`: class folders or labelled shards ->
  `(images, labels)` for evaluation.
- `CorruptRecordCounter`, `CorruptRecordReport`: skipped-record accounting.
- `write_demo_dataset`, `demo_scene`: the synthetic shapes dataset.

The tokenizers (`tokenizers`, `get_tokenizer`), caption labels (`labels`,
`make_label_fn`) and `document_frequency` modules are re-exported lazily.
"""

import importlib

from keras_superclass.data import schema
from keras_superclass.data.demo_dataset import DemoSource
from keras_superclass.data.demo_dataset import demo_scene
from keras_superclass.data.demo_dataset import write_demo_dataset
from keras_superclass.data.shard_writer import read_manifest
from keras_superclass.data.shard_writer import write_shards
from keras_superclass.data.sources import FolderSource
from keras_superclass.data.sources import RawRecord
from keras_superclass.data.sources import RecordListSource
from keras_superclass.data.sources import Source
from keras_superclass.data.sources import TarSource

# Modules / names that need TensorFlow at import or live in other modules:
# resolved on first use.
_LAZY = {
    "reader": ("keras_superclass.data.reader", None),
    "transforms": ("keras_superclass.data.transforms", None),
    "image_text_dataset": (
        "keras_superclass.data.datasets",
        "image_text_dataset",
    ),
    "labelled_image_dataset": (
        "keras_superclass.data.datasets",
        "labelled_image_dataset",
    ),
    "CorruptRecordCounter": (
        "keras_superclass.data.corrupt_records",
        "CorruptRecordCounter",
    ),
    "CorruptRecordReport": (
        "keras_superclass.data.corrupt_records",
        "CorruptRecordReport",
    ),
    "tokenizers": ("keras_superclass.data.tokenizers", None),
    "get_tokenizer": ("keras_superclass.data.tokenizers", "get_tokenizer"),
    "labels": ("keras_superclass.data.labels", None),
    "make_label_fn": ("keras_superclass.data.labels", "make_label_fn"),
    "document_frequency": ("keras_superclass.data.document_frequency", None),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(
            f"module 'keras_superclass.data' has no attribute {name!r}"
        )
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CorruptRecordCounter",
    "CorruptRecordReport",
    "DemoSource",
    "FolderSource",
    "RawRecord",
    "RecordListSource",
    "Source",
    "TarSource",
    "demo_scene",
    "image_text_dataset",
    "labelled_image_dataset",
    "read_manifest",
    "schema",
    "write_demo_dataset",
    "write_shards",
]
