"""`ReadOptions`: how the readers read, transform and batch (internal).

The public dataset functions (`image_text_dataset`,
`labelled_image_dataset`) take these as keyword arguments and hand one
frozen `ReadOptions` to the steps of the pipeline (`records`,
`image_pipeline`).
"""

import dataclasses

from keras_superclass.data import transforms


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """Options of one reader; see `image_text_dataset` for their meaning.

    Attributes:
        training: random crops and shuffling, else the eval transform in
            order.
        seed: seed of shuffling and augmentation (`None`: unseeded).
        deterministic: the same elements in the same order on every run.
        shuffle_buffer: records in the shuffle buffer (training).
        cycle_length: shard files read at once.
        repeat: repeat the records forever.
        converter: the `SuperClassImageConverter` whose crops, resize and
            normalisation the reader applies.
        strong_augment: the reference's strong augmentation.
        scale: crop area range; `None` for the default of `strong_augment`.
        ratio: crop aspect ratio range.
        skip_records: records skipped (still serialised) at the start.
        batch_size: batch size.
        drop_remainder: drop the last partial batch.
    """

    training: bool = True
    seed: int | None = None
    deterministic: bool = False
    shuffle_buffer: int = 2048
    cycle_length: int = 8
    repeat: bool = False
    converter: object = None
    strong_augment: bool = False
    scale: tuple | None = None
    ratio: tuple = transforms.DEFAULT_RATIO
    skip_records: int = 0
    batch_size: int = 32
    drop_remainder: bool = True

    @property
    def image_size(self):
        """The output side length."""
        return self.converter.size

    @property
    def crop_scale(self):
        """The crop area range: `scale`, or the default of the recipe."""
        if self.scale is not None:
            return self.scale
        if self.strong_augment:
            return transforms.STRONG_SCALE
        return transforms.TRAIN_SCALE
