"""tf.data reader: shapes, normalisation, transforms, determinism,
decoding of odd image formats, corrupt records, labelled datasets."""

import io
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_superclass.data import records as reader
from keras_superclass.data import schema
from keras_superclass.data import transforms
from keras_superclass.data.corrupt import truncate_file
from keras_superclass.data.corrupt import write_corrupt_shard
from keras_superclass.data.demo_dataset import demo_vocabulary
from keras_superclass.data.reader import CorruptRecordCounter
from keras_superclass.data.reader import CorruptRecordReport
from keras_superclass.data.reader import image_text_dataset
from keras_superclass.data.reader import labelled_image_dataset
from keras_superclass.utils.constants import OPENAI_MEAN
from keras_superclass.utils.constants import OPENAI_STD

MEAN = np.array(OPENAI_MEAN, np.float32)
STD = np.array(OPENAI_STD, np.float32)


def make_label_fn(max_labels=8):
    """A tiny word-level label function over the demo vocabulary."""
    vocab = sorted(set(demo_vocabulary()) | {"caption", "file", "fine"})
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(vocab), tf.range(len(vocab), dtype=tf.int32)
        ),
        default_value=-1,
    )

    def label_fn(caption):
        words = tf.strings.split(tf.strings.lower(caption))
        ids = table.lookup(words)
        ids, _ = tf.unique(tf.boolean_mask(ids, ids >= 0))
        ids = ids[:max_labels]
        pad = max_labels - tf.shape(ids)[0]
        return tf.ensure_shape(
            tf.pad(ids, [[0, pad]], constant_values=-1), (max_labels,)
        )

    return label_fn, vocab


def encode(pixels_or_image, fmt="PNG", **kw):
    image = pixels_or_image
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    out = io.BytesIO()
    image.save(out, format=fmt, **kw)
    return out.getvalue()


def write_raw_shard(path, samples):
    """Writes records WITHOUT the writer's checks (to plant bad ones)."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, (image, caption) in enumerate(samples):
            example = schema.make_example(image, b"", f"k{i}", 1, 1)
            f = example.features.feature
            f["caption"].bytes_list.value[0] = caption
            writer.write(example.SerializeToString())


def gradient_image(h=40, w=56, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w)], -1)
    noise = rng.integers(0, 30, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def test_shapes_dtypes_and_normalisation(tmp_path):
    color = (128, 64, 200)
    flat = np.zeros((20, 30, 3), np.uint8) + np.array(color, np.uint8)
    samples = [(encode(flat), f"a red circle {i}".encode()) for i in range(5)]
    write_raw_shard(tmp_path / "a.tfrecord", samples)
    label_fn, vocab = make_label_fn()

    ds = image_text_dataset(
        str(tmp_path / "*.tfrecord"),
        2,
        image_size=16,
        training=False,
        label_fn=label_fn,
    )
    batches = list(ds)
    assert len(batches) == 2  # drop_remainder
    images, ids = batches[0]
    assert images.shape == (2, 16, 16, 3) and images.dtype == tf.float32
    assert ids.shape == (2, 8) and ids.dtype == tf.int32
    expected = (np.array(color, np.float32) / 255 - MEAN) / STD
    np.testing.assert_allclose(
        images.numpy(), np.broadcast_to(expected, images.shape), atol=1e-5
    )
    row = ids.numpy()[0]
    assert [vocab[i] for i in row[row >= 0]] == ["a", "red", "circle"]
    assert (row[3:] == -1).all()

    raw = image_text_dataset(
        str(tmp_path),
        3,
        image_size=16,
        training=True,
        normalize=False,
        drop_remainder=False,
        seed=1,
    )
    batches = list(raw)
    assert [b[0].shape[0] for b in batches] == [3, 2]
    images, captions = batches[0]
    assert images.dtype == tf.uint8 and captions.dtype == tf.string
    assert (images.numpy() == np.array(color, np.uint8)).all()


def test_random_crop_box_follows_torchvision():
    boxes = [
        [
            int(v)
            for v in transforms.random_crop_box(
                80, 100, tf.constant([7, i], tf.int64)
            )
        ]
        for i in range(40)
    ]
    for top, left, h, w in boxes:
        area = h * w / 8000
        assert 0.88 <= area <= 1.0 and 0.74 <= w / h <= 1.35
        assert 0 <= top <= 80 - h and 0 <= left <= 100 - w
    assert len({tuple(b) for b in boxes}) > 10
    # Too wide for the ratio range: the centre-crop fallback at ratio 4/3.
    top, left, h, w = (
        int(v)
        for v in transforms.random_crop_box(
            10, 200, tf.constant([1, 2], tf.int64)
        )
    )
    assert (h, w) == (10, 13) and top == 0 and left == (200 - 13) // 2


def test_eval_transform_matches_torchvision_on_pil():
    # torchvision's Resize(32, BICUBIC) + CenterCrop(32) on a PIL image is
    # PIL's bicubic resize of the shorter side to 32 (long side
    # int(32 * 72 / 48) = 48) and a crop at round((48 - 32) / 2). (torch is
    # not imported here: it cannot load after TensorFlow in one process.)
    pixels = gradient_image(48, 72)
    ours = transforms.resize_center_crop(tf.constant(pixels), 32).numpy()
    resized = Image.fromarray(pixels).resize((48, 32), Image.BICUBIC)
    reference = np.asarray(resized.crop((8, 0, 40, 32)), np.float32)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).mean() < 1.5


def test_pil_resize_equals_torchvision_on_pil_exactly():
    # torchvision's RandomResizedCrop on a PIL image is `img.crop(box)` then
    # PIL's bicubic resize; "pil" reproduces it bit for bit (torch itself
    # cannot load after TensorFlow in this process).
    pixels = gradient_image(90, 120, seed=3)
    seed = tf.constant([5, 9], tf.int64)
    ours = transforms.random_resized_crop(
        tf.constant(pixels), 64, seed, scale=(0.4, 1.0)
    ).numpy()
    top, left, h, w = (
        int(v) for v in transforms.random_crop_box(90, 120, seed, (0.4, 1.0))
    )
    crop = Image.fromarray(pixels).crop((left, top, left + w, top + h))
    reference = np.asarray(crop.resize((64, 64), Image.BICUBIC))
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, reference)

    # The graph-only methods: antialias stays close, fast aliases when
    # shrinking 3x (what antialiasing is for).
    big = gradient_image(192, 192, seed=4)
    exact = np.asarray(
        Image.fromarray(big).resize((64, 64), Image.BICUBIC), np.float32
    )
    for method, mean_limit in (("antialias", 0.5), ("fast", None)):
        out = transforms.resize_bicubic(tf.constant(big), (64, 64), method)
        error = np.abs(out.numpy().astype(np.float32) - exact).mean()
        if mean_limit is not None:
            assert error < mean_limit, method
        else:
            assert error > 1.0, method
    with pytest.raises(ValueError, match="resize method"):
        transforms.resize_bicubic(tf.constant(big), (64, 64), "lanczos")
    with pytest.raises(ValueError, match="resize_method"):
        image_text_dataset(
            [os.devnull], 1, resize_method="nearest", training=False
        )


def test_deterministic_batches(tmp_path):
    for s in range(2):
        write_raw_shard(
            tmp_path / f"s{s}.tfrecord",
            [
                (
                    encode(gradient_image(seed=10 * s + i), "JPEG"),
                    f"caption {i}".encode(),
                )
                for i in range(6)
            ],
        )

    def run(seed):
        ds = image_text_dataset(
            str(tmp_path),
            4,
            image_size=24,
            seed=seed,
            deterministic=True,
            shuffle_buffer=8,
            strong_augment=True,
        )
        return [(i.numpy(), c.numpy()) for i, c in ds]

    # A repeated stream: every iterator of the dataset gives the same
    # batches (Keras may open a second iterator after peeking at the
    # first), while each pass over the data is shuffled anew.
    endless = image_text_dataset(
        str(tmp_path),
        4,
        image_size=24,
        seed=3,
        deterministic=True,
        shuffle_buffer=8,
        repeat=True,
    )
    streams = [
        [c.numpy().tolist() for _, c in endless.take(9)] for _ in range(2)
    ]
    assert streams[0] == streams[1]
    passes = [sum(streams[0][i : i + 3], []) for i in (0, 3, 6)]
    assert all(sorted(p) == sorted(passes[0]) for p in passes)
    assert len({tuple(p) for p in passes}) > 1

    first, second, other = run(3), run(3), run(4)
    assert len(first) == 3
    for (a, ca), (b, cb) in zip(first, second):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ca, cb)
    assert any(not np.array_equal(a, b) for (a, _), (b, _) in zip(first, other))
    with pytest.raises(ValueError, match="seed"):
        image_text_dataset(str(tmp_path), 4, deterministic=True)


def test_decodes_cmyk_rgba_grayscale_png(tmp_path):
    pixels = gradient_image(24, 24)
    rgb = Image.fromarray(pixels)
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray((pixels[..., 0] // 2).astype(np.uint8)))
    variants = {
        "cmyk_jpeg": (encode(rgb.convert("CMYK"), "JPEG", quality=95), 8),
        "rgba_png": (encode(rgba, "PNG"), 0),
        "gray_png": (encode(rgb.convert("L"), "PNG"), 0),
        "gray_jpeg": (encode(rgb.convert("L"), "JPEG", quality=95), 6),
        "palette_png": (encode(rgb.convert("P"), "PNG"), 0),
        "rgb_png16": (
            encode(
                Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).convert(
                    "I;16"
                ),
                "PNG",
            ),
            1,
        ),
    }
    names = list(variants)
    write_raw_shard(
        tmp_path / "a.tfrecord",
        [(variants[n][0], n.encode()) for n in names],
    )
    ds = image_text_dataset(
        str(tmp_path), 1, image_size=24, training=False, normalize=False
    )
    seen = set()
    for image, caption in ds:
        name = caption.numpy()[0].decode()
        seen.add(name)
        data, tolerance = variants[name]
        reference = Image.open(io.BytesIO(data))
        if reference.mode == "I;16":
            reference = Image.fromarray(
                (np.asarray(reference) >> 8).astype(np.uint8)
            )
        reference = np.asarray(reference.convert("RGB"), np.int32)
        got = image.numpy()[0].astype(np.int32)
        assert np.abs(got - reference).max() <= tolerance, name
    assert seen == set(names)


def test_corrupt_records_are_skipped_and_counted(tmp_path):
    good = encode(gradient_image(16, 16))
    planted = write_corrupt_shard(tmp_path / "a.tfrecord", good)
    assert planted == {
        "empty_caption": 2,
        "invalid_utf8_caption": 1,
        "undecodable_image": 1,
    }
    write_raw_shard(
        tmp_path / "c.tfrecord",
        [(good, "fine, caf\u00e9 \u2603".encode())],
    )
    # A real shard cut in the middle of its 4th record.
    write_raw_shard(
        tmp_path / "b.tfrecord",
        [(good, f"second file {i}".encode()) for i in range(6)],
    )
    truncate_file(
        tmp_path / "b.tfrecord",
        0.5 + 20 / os.path.getsize(tmp_path / "b.tfrecord"),
    )

    label_fn, _ = make_label_fn()
    ds = image_text_dataset(
        str(tmp_path),
        2,
        image_size=8,
        training=True,
        seed=0,
        label_fn=label_fn,
        drop_remainder=False,
    )
    assert isinstance(ds.corrupt_records, CorruptRecordCounter)
    n = sum(int(images.shape[0]) for images, _ in ds)
    assert n == 2 + 3
    expected = {
        "empty_caption": 2,
        "invalid_utf8_caption": 1,
        "truncated_shard": 1,
        "undecodable_image": 1,
    }
    assert ds.corrupt_records.counts() == expected

    lines = []
    report = CorruptRecordReport(ds, print_fn=lines.append)
    report.on_epoch_end(0)
    for _ in ds:
        pass
    report.on_epoch_end(1)
    assert "undecodable_image=1 (+1)" in lines[0]
    assert "undecodable_image=2 (+1)" in lines[1]
    assert "truncated_shard=2 (+1)" in lines[1]
    # A quiet report (another process's, or verbose=0) says only epochs
    # that skipped something, with its prefix.
    quiet = CorruptRecordReport(
        ds, print_fn=lines.append, only_when_skipped=True, prefix="process 1: "
    )
    quiet.on_epoch_end(0)  # the records skipped so far: said
    quiet.on_epoch_end(1)  # nothing new: no line
    assert lines[2].startswith("process 1: Epoch 1: corrupt records skipped")
    assert len(lines) == 3
    ds.corrupt_records.reset()
    assert ds.corrupt_records.total == 0
    with pytest.raises(ValueError, match="CorruptRecordCounter"):
        CorruptRecordReport(object())


@pytest.mark.parametrize("block", [2, None])
def test_damaged_shards_and_failures_at_the_end_are_counted(
    tmp_path, monkeypatch, block
):
    # The reader accounts for a file's bytes in blocks of records; block 2
    # puts the damage in a later block than the first.
    if block:
        monkeypatch.setattr(reader, "_ACCOUNTING_BLOCK", block)
    good = encode(gradient_image(16, 16))
    # The last record of the stream does not decode: the end marker must
    # still count it.
    write_raw_shard(
        tmp_path / "a.tfrecord",
        [(good, b"first"), (good, b"second"), (b"not an image", b"last")],
    )
    # A flipped byte in the 3rd of 5 records: a checksum error.
    write_raw_shard(
        tmp_path / "b.tfrecord",
        [(good, f"flipped file {i}".encode()) for i in range(5)],
    )
    data = bytearray((tmp_path / "b.tfrecord").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "b.tfrecord").write_bytes(bytes(data))

    ds = image_text_dataset(
        str(tmp_path),
        1,
        image_size=8,
        training=False,
        deterministic=True,
        seed=0,
        cycle_length=1,
    )
    captions = [c.numpy()[0].decode() for _, c in ds]
    assert captions == [
        "first",
        "second",
        "flipped file 0",
        "flipped file 1",
    ]
    assert ds.corrupt_records.counts() == {
        "corrupt_shard": 1,
        "undecodable_image": 1,
    }


def test_batched_label_fn_equals_per_caption_labels(tmp_path):
    from keras_superclass.data.labels import make_label_fn as real_label_fn
    from keras_superclass.data.tokenizers import get_tokenizer

    texts = [f"a red circle and {i} blue stars" for i in range(5)]
    write_raw_shard(
        tmp_path / "a.tfrecord",
        [
            (encode(gradient_image(8, 8, seed=i)), t.encode())
            for i, t in enumerate(texts)
        ],
    )
    tokenizer = get_tokenizer("clip")
    label_fn = real_label_fn(tokenizer, max_labels=8)
    assert label_fn.batched
    calls = []

    def spy(captions):  # Records the shape it is called with.
        calls.append(captions.shape.rank)
        return label_fn(captions)

    spy.batched = True
    ds = image_text_dataset(
        str(tmp_path),
        2,
        image_size=8,
        training=False,
        label_fn=spy,
        drop_remainder=False,
    )
    labels = np.concatenate([ids.numpy() for _, ids in ds])
    assert set(calls) == {1}  # Traced on (B,) captions, never scalars.
    expected = np.stack([label_fn(tf.constant(t)).numpy() for t in texts])
    np.testing.assert_array_equal(labels, expected)


def test_exit_does_not_hang_while_the_pipeline_runs(tmp_path):
    # A Python call (PIL resize) still running when the interpreter exits
    # used to deadlock the exit; the script stops reading mid-stream.
    import subprocess
    import sys

    write_raw_shard(
        tmp_path / "a.tfrecord",
        [
            (encode(gradient_image(96, 128, seed=i), "JPEG"), b"a caption")
            for i in range(64)
        ],
    )
    script = (
        "from keras_superclass.data.reader import image_text_dataset\n"
        f"ds = image_text_dataset({str(tmp_path)!r}, 4, image_size=64, "
        "repeat=True, shuffle_buffer=16)\n"
        "it = iter(ds)\n"
        "for _ in range(3):\n"
        "    next(it)\n"
        "print('read', flush=True)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3")
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "read" in done.stdout


def test_per_process_file_sharding(tmp_path):
    for s in range(4):
        write_raw_shard(
            tmp_path / f"s{s}.tfrecord",
            [(encode(gradient_image(8, 8)), f"file{s}".encode())],
        )

    def captions(index, count):
        ds = image_text_dataset(
            str(tmp_path),
            1,
            image_size=8,
            training=False,
            process_index=index,
            process_count=count,
        )
        return sorted(c.numpy()[0].decode() for _, c in ds)

    assert captions(0, 2) == ["file0", "file2"]
    assert captions(1, 2) == ["file1", "file3"]
    assert captions(None, None) == [f"file{s}" for s in range(4)]
    with pytest.raises(ValueError, match="processes"):
        captions(0, 5)


def test_labelled_image_dataset_class_folders(tmp_path):
    colors = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}
    for name, color in colors.items():
        (tmp_path / name).mkdir()
        for i in range(2):
            pixels = np.zeros((10, 12, 3), np.uint8) + np.array(color, np.uint8)
            (tmp_path / name / f"{i}.png").write_bytes(encode(pixels))
    (tmp_path / "red" / "broken.jpg").write_bytes(b"broken")
    ds, names = labelled_image_dataset(
        str(tmp_path), image_size=8, batch_size=4, normalize=False
    )
    assert names == ["blue", "green", "red"]
    images, labels = [
        np.concatenate(x)
        for x in zip(*[(i.numpy(), lab.numpy()) for i, lab in ds])
    ]
    assert labels.dtype == np.int32 and images.shape == (6, 8, 8, 3)
    for image, label in zip(images, labels):
        assert tuple(image[4, 4]) == colors[names[label]]
    assert ds.corrupt_records.counts() == {"undecodable_image": 1}


def test_labelled_shards_feed_model_fit(tmp_path):
    from keras_superclass.data.demo_dataset import demo_scene
    from keras_superclass.data.demo_dataset import write_demo_dataset

    write_demo_dataset(tmp_path, num_train=0, num_test=12, progress=False)
    ds, names = labelled_image_dataset(
        str(tmp_path / "test"),
        image_size=16,
        batch_size=4,
        label_feature="label_shape",
    )
    assert names == ["circle", "square", "triangle", "cross", "star"]
    labels = np.concatenate([lab.numpy() for _, lab in ds])
    expected = [
        demo_scene(i, split="test")[2]["label_shape"] for i in range(12)
    ]
    assert labels.tolist() == expected

    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(names)),
        ]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    lines = []
    history = model.fit(
        ds,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[CorruptRecordReport(ds, print_fn=lines.append)],
    )
    assert np.isfinite(history.history["loss"][0])
    assert lines == ["Epoch 1: corrupt records skipped: none"]


def test_missing_shards_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="keras-superclass shards"):
        image_text_dataset(os.path.join(tmp_path, "*.tfrecord"), 2)


def test_tokenizer_argument_uses_make_label_fn(tmp_path, monkeypatch):
    import sys
    import types

    import keras_superclass.data as data

    calls = []
    label_fn, _ = make_label_fn(max_labels=5)

    def fake_make_label_fn(tokenizer, max_labels=64, pad_id=-1):
        calls.append((tokenizer, max_labels, pad_id))
        return label_fn

    labels = types.ModuleType("keras_superclass.data.labels")
    labels.make_label_fn = fake_make_label_fn
    monkeypatch.setitem(sys.modules, "keras_superclass.data.labels", labels)
    monkeypatch.delitem(data.__dict__, "make_label_fn", raising=False)
    # The package re-exports the other branch's modules lazily.
    assert data.make_label_fn is fake_make_label_fn
    del data.__dict__["make_label_fn"]  # Drop the cached fake.

    write_raw_shard(
        tmp_path / "a.tfrecord",
        [(encode(gradient_image(8, 8)), b"a blue star")],
    )
    tokenizer = object()
    ds = image_text_dataset(
        str(tmp_path),
        1,
        image_size=8,
        training=False,
        tokenizer=tokenizer,
        max_labels=5,
    )
    assert calls == [(tokenizer, 5, -1)]
    _, ids = next(iter(ds))
    assert ids.shape == (1, 5)
    with pytest.raises(ValueError, match="not both"):
        image_text_dataset(
            str(tmp_path), 1, tokenizer=tokenizer, label_fn=label_fn
        )
