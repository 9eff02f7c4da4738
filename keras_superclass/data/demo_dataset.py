"""A small synthetic image-caption dataset that a tiny model can learn.

Each 64x64 RGB scene shows 1-3 copies of one shape (circle, square,
triangle, cross, star) in one colour (red, green, blue, yellow, purple,
orange), small or large, grouped on the left, in the middle or on the right
of a pale, slightly noisy background. Its caption names the count, colour
and shape (and sometimes size and position) through varied templates,
filler words and synonyms ("a photo of two red circles on the left",
"there is a small blue box", ...), so caption tokens are strongly tied to
what is visible. Per-image attribute labels are stored as extra int64
features for linear probes: `label_shape`, `label_color`, `label_count`
(count - 1), `label_size`, `label_position`; their class names are in the
manifest (`metadata.class_names`), where `labelled_image_dataset` finds
them.

Everything is a function of `(seed, split, index)`: the same arguments give
the same pixels and captions, however the shards are split or how many
processes write them.

Example (not run as a doctest: slow: writes
thousands of images):

>>> write_demo_dataset("demo_data", num_train=2048, num_test=512)
... # doctest: +SKIP
>>> ds, names = labelled_image_dataset("demo_data/test", 64, 128,
...                                    label_feature="label_shape")
... # doctest: +SKIP
"""

import io
import math
import os

import numpy as np

from keras_superclass.data.sources import RawRecord
from keras_superclass.data.sources import Source

SHAPES = ("circle", "square", "triangle", "cross", "star")
COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
COUNTS = ("one", "two", "three")
SIZES = ("small", "large")
POSITIONS = ("left", "middle", "right")

COLOR_RGB = {
    "red": (215, 35, 35),
    "green": (35, 160, 55),
    "blue": (40, 75, 215),
    "yellow": (235, 205, 30),
    "purple": (140, 50, 180),
    "orange": (245, 125, 20),
}
SHAPE_WORDS = {
    "circle": (("circle", "circles"), ("disk", "disks"), ("dot", "dots")),
    "square": (("square", "squares"), ("box", "boxes"), ("block", "blocks")),
    "triangle": (
        ("triangle", "triangles"),
        ("triangular shape", "triangular shapes"),
    ),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
    "star": (("star", "stars"), ("star shape", "star shapes")),
}
COLOR_WORDS = {
    "red": ("red", "red", "crimson"),
    "green": ("green", "green", "emerald"),
    "blue": ("blue", "blue", "azure"),
    "yellow": ("yellow", "yellow", "golden"),
    "purple": ("purple", "purple", "violet"),
    "orange": ("orange", "orange", "tangerine"),
}
COUNT_WORDS = (("a", "one", "a single"), ("two", "a pair of"), ("three",))
SIZE_WORDS = (("small", "little", "tiny"), ("large", "big", "huge"))
POSITION_WORDS = (
    ("on the left", "at the left side"),
    ("in the middle", "in the center"),
    ("on the right", "at the right side"),
)
TEMPLATES = (
    "a photo of {obj}{pos}",
    "{there} {obj}{pos}",
    "an image showing {obj}{pos}",
    "{obj}{pos} on a plain background",
    "a simple drawing of {obj}{pos}",
    "here we see {obj}{pos}",
    "{obj}{pos}",
    "a picture with {obj}{pos} in it",
)
CLASS_NAMES = {
    "label_shape": list(SHAPES),
    "label_color": list(COLORS),
    "label_count": list(COUNTS),
    "label_size": list(SIZES),
    "label_position": list(POSITIONS),
}
_SPLITS = {"train": 0, "test": 1}
_SUPERSAMPLE = 4


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _draw_shape(draw, shape, cx, cy, r, fill):
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "triangle":
        draw.polygon(
            [(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)],
            fill=fill,
        )
    elif shape == "cross":
        t = r * 0.33
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    elif shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.42
            angle = -math.pi / 2 + k * math.pi / 5
            points.append(
                (cx + radius * math.cos(angle), cy + radius * math.sin(angle))
            )
        draw.polygon(points, fill=fill)


def _caption(rng, shape, color, count, size, position):
    plural = count > 1
    shape_word = _pick(rng, SHAPE_WORDS[shape])[1 if plural else 0]
    words = [_pick(rng, COUNT_WORDS[count - 1])]
    if rng.random() < 0.5:
        words.append(_pick(rng, SIZE_WORDS[SIZES.index(size)]))
    words += [_pick(rng, COLOR_WORDS[color]), shape_word]
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    obj = " ".join(words)
    pos = ""
    if rng.random() < 0.5:
        pos = " " + _pick(rng, POSITION_WORDS[POSITIONS.index(position)])
    there = "there are" if plural else "there is"
    return _pick(rng, TEMPLATES).format(obj=obj, pos=pos, there=there)


def demo_scene(index, seed=0, split="train", image_size=64):
    """One scene: `(image uint8 (S, S, 3), caption str, labels dict)`.

    A pure function of `(index, seed, split, image_size)`.
    """
    from PIL import Image
    from PIL import ImageDraw

    split_id = _SPLITS.get(split, split) if isinstance(split, str) else split
    if not isinstance(split_id, int):
        raise ValueError(f"split must be 'train', 'test' or an int: {split!r}")
    rng = np.random.default_rng([int(seed), split_id, int(index)])
    shape = _pick(rng, SHAPES)
    color = _pick(rng, COLORS)
    count = int(rng.integers(1, 4))
    size = _pick(rng, SIZES)
    position = _pick(rng, POSITIONS)

    big = image_size * _SUPERSAMPLE
    background = tuple(int(v) for v in rng.integers(200, 256, size=3))
    canvas = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(canvas)
    unit = big / 64.0
    radius_range = (5.0, 6.5) if size == "small" else (8.5, 10.5)
    # The group's x range by position (in 64-pixel units).
    x_range = {"left": (2, 28), "middle": (19, 45), "right": (36, 62)}[position]
    placed = []
    for _ in range(count):
        for _attempt in range(50):
            r = rng.uniform(*radius_range)
            cx = rng.uniform(x_range[0] + r * 0.5, x_range[1] - r * 0.5)
            cy = rng.uniform(r + 1, 63 - r)
            if all(
                (cx - x) ** 2 + (cy - y) ** 2 > (r + q + 1) ** 2
                for x, y, q in placed
            ):
                break
        placed.append((cx, cy, r))
        jitter = rng.integers(-15, 16, size=3)
        fill = tuple(
            int(np.clip(c + j, 0, 255))
            for c, j in zip(COLOR_RGB[color], jitter)
        )
        _draw_shape(draw, shape, cx * unit, cy * unit, r * unit, fill)
    image = canvas.resize((image_size, image_size), Image.BOX)
    pixels = np.asarray(image, dtype=np.int16)
    noise = rng.integers(-6, 7, size=pixels.shape)
    pixels = np.clip(pixels + noise, 0, 255).astype(np.uint8)
    caption = _caption(rng, shape, color, count, size, position)
    labels = {
        "label_shape": SHAPES.index(shape),
        "label_color": COLORS.index(color),
        "label_count": count - 1,
        "label_size": SIZES.index(size),
        "label_position": POSITIONS.index(position),
    }
    return pixels, caption, labels


def _png(pixels):
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


class DemoSource(Source):
    """`Source` of demo scenes `0..num-1` of one split (for `write_shards`).

    Args:
        num: number of scenes.
        seed: dataset seed.
        split: "train" or "test" (different scenes for the same index).
        image_size: side length in pixels.
        records_per_shard: scenes per shard.

    Example (not run as a doctest: slow: writes
    thousands of images):

    >>> write_shards(DemoSource(256, split="test"), "demo/test")
    ... # doctest: +SKIP
    """

    def __init__(
        self, num, seed=0, split="train", image_size=64, records_per_shard=512
    ):
        self.num = int(num)
        self.seed = int(seed)
        self.split = split
        self.image_size = int(image_size)
        self.records_per_shard = int(records_per_shard)

    def tasks(self):
        size = max(1, self.records_per_shard)
        return [
            (start, min(self.num, start + size))
            for start in range(0, self.num, size)
        ]

    def read(self, task):
        for index in range(*task):
            pixels, caption, labels = demo_scene(
                index, self.seed, self.split, self.image_size
            )
            yield RawRecord(
                key=f"{self.split}-{index:06d}",
                image=_png(pixels),
                caption=caption,
                extra={name: [value] for name, value in labels.items()},
            )

    def describe(self):
        return {
            "type": "demo",
            "num": self.num,
            "seed": self.seed,
            "split": self.split,
            "image_size": self.image_size,
            "records_per_shard": self.records_per_shard,
        }


def write_demo_dataset(
    out_dir,
    num_train=2048,
    num_test=512,
    seed=0,
    image_size=64,
    records_per_shard=512,
    workers=1,
    progress=True,
    extra_features_fn=None,
):
    """Writes the demo dataset as `out_dir/train` and `out_dir/test` shards.

    Args:
        out_dir: output folder.
        num_train: training scenes.
        num_test: test scenes (drawn independently of the training ones).
        seed: dataset seed.
        image_size: side length in pixels.
        records_per_shard: scenes per shard.
        workers: writer processes.
        progress: show progress bars.
        extra_features_fn: more int64-list features of a caption, as in
            `write_shards` (e.g. CatLIP synset labels).

    Returns:
        Dict `split -> manifest`.
    """
    from keras_superclass.data.shard_writer import write_shards

    manifests = {}
    for split, num in (("train", num_train), ("test", num_test)):
        if num <= 0:
            continue
        source = DemoSource(num, seed, split, image_size, records_per_shard)
        manifests[split] = write_shards(
            source,
            os.path.join(os.fspath(out_dir), split),
            workers=workers,
            prefix=split,
            progress=progress,
            metadata={"class_names": CLASS_NAMES, "demo": True},
            extra_features_fn=extra_features_fn,
        )
    return manifests


def demo_vocabulary():
    """Every word the demo captions can use (sorted), e.g. for a tiny
    word-level tokenizer in tests."""
    words = set()
    for text in TEMPLATES:
        words.update(
            w
            for w in text.replace("{obj}", " ")
            .replace("{pos}", " ")
            .replace("{there}", "there is are")
            .replace(",", " ")
            .split()
        )
    for table in (SHAPE_WORDS, COLOR_WORDS):
        for options in table.values():
            for option in options:
                for phrase in option if isinstance(option, tuple) else [option]:
                    words.update(phrase.split())
    for group in COUNT_WORDS + SIZE_WORDS + POSITION_WORDS:
        for phrase in group:
            words.update(phrase.split())
    words.add("an")
    return sorted(words)
