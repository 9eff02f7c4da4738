"""`RecordListSource`: records already in memory."""

from keras_superclass.data.sources.base import RawRecord
from keras_superclass.data.sources.base import Source
from keras_superclass.data.sources.base import chunks


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
        return chunks(len(self.records), self.records_per_shard)

    def read(self, task):
        start, stop = task
        yield from self.records[start:stop]

    def describe(self):
        return {
            "type": "records",
            "num_records": len(self.records),
            "records_per_shard": self.records_per_shard,
        }
