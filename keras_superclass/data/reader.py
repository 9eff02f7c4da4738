"""tf.data readers: image-caption shards to training batches.

`image_text_dataset` reads the TFRecord shards written by `write_shards`
and yields `(images, token_ids)` batches for `model.fit` on any backend;
`labelled_image_dataset` yields `(images, labels)` for evaluation.

Corrupt data never crashes a run and never passes silently: undecodable
images, blank captions, invalid UTF-8 captions and damaged shard files are
skipped and counted in a `CorruptRecordCounter` (attached to the returned
dataset as `dataset.corrupt_records`); `CorruptRecordReport` prints the
counts at the end of every epoch.

This module gathers the public names; the code lives in `datasets` (the
two readers), `records` (shard files to records), `image_pipeline` (decode,
transform, batch), `corrupt_records` (the accounting) and `read_options`.
"""

from keras_superclass.data.corrupt_records import CorruptRecordCounter
from keras_superclass.data.corrupt_records import CorruptRecordReport
from keras_superclass.data.datasets import image_text_dataset
from keras_superclass.data.datasets import labelled_image_dataset
from keras_superclass.data.records import AUTOTUNE
from keras_superclass.data.records import default_process_index_and_count
from keras_superclass.data.records import list_shards

__all__ = [
    "AUTOTUNE",
    "CorruptRecordCounter",
    "CorruptRecordReport",
    "default_process_index_and_count",
    "image_text_dataset",
    "labelled_image_dataset",
    "list_shards",
]
