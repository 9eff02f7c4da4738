"""Demo dataset: determinism, captions agree with labels and pixels."""

import io

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_superclass.data.demo_dataset import COLOR_RGB
from keras_superclass.data.demo_dataset import COLOR_WORDS
from keras_superclass.data.demo_dataset import COLORS
from keras_superclass.data.demo_dataset import COUNT_WORDS
from keras_superclass.data.demo_dataset import SHAPE_WORDS
from keras_superclass.data.demo_dataset import SHAPES
from keras_superclass.data.demo_dataset import demo_scene
from keras_superclass.data.demo_dataset import write_demo_dataset
from keras_superclass.data.shard_writer import read_manifest


def test_scenes_are_deterministic():
    a = demo_scene(5, seed=1)
    b = demo_scene(5, seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]
    assert a[0].shape == (64, 64, 3) and a[0].dtype == np.uint8
    other = demo_scene(5, seed=2)
    assert not np.array_equal(a[0], other[0])
    test = demo_scene(5, seed=1, split="test")
    assert not np.array_equal(a[0], test[0])


def test_captions_and_pixels_agree_with_labels():
    captions = []
    for i in range(120):
        pixels, caption, labels = demo_scene(i)
        captions.append(caption)
        shape = SHAPES[labels["label_shape"]]
        color = COLORS[labels["label_color"]]
        count = labels["label_count"] + 1
        words = f" {caption} "
        plural = 1 if count > 1 else 0
        assert any(f" {w[plural]} " in words for w in SHAPE_WORDS[shape])
        assert any(f" {w} " in words for w in COLOR_WORDS[color])
        count_words = COUNT_WORDS[count - 1] + (("an",) if count == 1 else ())
        assert any(f" {w} " in words for w in count_words)
        # No other colour's name appears.
        for c in COLORS:
            if c != color:
                assert not any(f" {w} " in words for w in COLOR_WORDS[c])
        # The shape's colour is visible: pixels far from the background
        # (the median colour) are close to it.
        p = pixels.reshape(-1, 3).astype(np.int32)
        far = np.abs(p - np.median(p, 0)).max(-1) > 100
        assert far.sum() >= 20
        dist = np.abs(p[far].mean(0) - np.array(COLOR_RGB[color])).max()
        assert dist < 40, (i, caption, p[far].mean(0))
    # Varied templates and synonyms.
    assert len(set(captions)) > 100
    assert len({c.split()[0] for c in captions}) >= 5


def _records(folder):
    out = {}
    for name in sorted(tf.io.gfile.glob(str(folder / "*.tfrecord"))):
        for raw in tf.compat.v1.io.tf_record_iterator(name):
            f = tf.train.Example.FromString(raw).features.feature
            key = f["key"].bytes_list.value[0].decode()
            image = np.asarray(
                Image.open(io.BytesIO(f["image"].bytes_list.value[0]))
            )
            out[key] = (
                image,
                f["caption"].bytes_list.value[0].decode(),
                f["label_shape"].int64_list.value[0],
                f["label_color"].int64_list.value[0],
                f["label_count"].int64_list.value[0],
            )
    return out


def test_written_shards_do_not_depend_on_sharding(tmp_path):
    m1 = write_demo_dataset(
        tmp_path / "a", 10, 4, seed=3, records_per_shard=3, progress=False
    )
    m2 = write_demo_dataset(
        tmp_path / "b", 10, 4, seed=3, records_per_shard=7, progress=False
    )
    assert m1["train"]["num_records"] == 10 and m1["test"]["num_records"] == 4
    assert len(m1["train"]["shards"]) == 4 and len(m2["train"]["shards"]) == 2
    manifest = read_manifest(tmp_path / "a" / "test")
    assert manifest["metadata"]["class_names"]["label_color"] == list(COLORS)
    assert "label_shape" in manifest["extra_features"]
    for split in ("train", "test"):
        a = _records(tmp_path / "a" / split)
        b = _records(tmp_path / "b" / split)
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key][0], b[key][0])
            assert a[key][1:] == b[key][1:]
            index = int(key.split("-")[1])
            pixels, caption, labels = demo_scene(index, 3, split)
            np.testing.assert_array_equal(a[key][0], pixels)
            assert a[key][1:] == (
                caption,
                labels["label_shape"],
                labels["label_color"],
                labels["label_count"],
            )
