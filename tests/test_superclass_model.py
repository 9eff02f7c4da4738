"""SuperClass backbone, head and task: structure, training, presets."""

import json
import os
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_superclass  # noqa: F401  (registers the classes)
from keras_superclass.losses import SuperClassLoss
from keras_superclass.models import SuperClassBackbone
from keras_superclass.models import SuperClassClassifier

TINY = dict(
    image_shape=(32, 32, 3),
    patch_size=8,
    num_layers=2,
    num_heads=2,
    hidden_dim=32,
    mlp_dim=64,
)
V = 50
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_task(**kwargs):
    backbone_kwargs = {**TINY, **kwargs.pop("backbone", {})}
    return SuperClassClassifier(
        SuperClassBackbone(**backbone_kwargs), vocabulary_size=V, **kwargs
    )


def images(n=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, size, size, 3)).astype("float32")


def token_dataset(n=16, batch=4, length=6, seed=0):
    """Images whose mean colour decides their tokens: learnable."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32, 32, 3)).astype("float32") * 0.1
    ids = np.full((n, length), -1, "int32")
    for i in range(n):
        k = i % 3
        x[i, ..., k] += 1.0
        ids[i, :3] = [k, 10 + k, 20 + k]
    return tf.data.Dataset.from_tensor_slices((x, ids)).batch(batch), x, ids


def test_outputs_and_pooling_variants():
    x = images()
    for pooling in ("avg", "cls", "map"):
        backbone = SuperClassBackbone(**TINY, pooling=pooling)
        out = backbone(x)
        assert out["pooled_output"].shape == (4, 32)
        assert out["sequence_output"].shape == (4, 17, 32)
    seq = backbone(x)["sequence_output"]
    avg = SuperClassBackbone(**TINY, pooling="avg")
    avg.set_weights(
        [w for w in backbone.get_weights()][: len(avg.get_weights())]
    )
    out = avg(x)
    # "avg" = mean of patch tokens after ln_post, class token excluded.
    np.testing.assert_allclose(
        ops.convert_to_numpy(out["pooled_output"]),
        ops.convert_to_numpy(out["sequence_output"])[:, 1:].mean(1),
        atol=1e-5,
    )
    assert seq.shape == (4, 17, 32)
    no_cls = SuperClassBackbone(**TINY, use_class_token=False)
    assert no_cls(x)["sequence_output"].shape == (4, 16, 32)
    with pytest.raises(ValueError, match="class token"):
        SuperClassBackbone(**TINY, pooling="cls", use_class_token=False)


def test_initialisation_follows_openclip():
    backbone = SuperClassBackbone(**{**TINY, "hidden_dim": 256, "mlp_dim": 64})
    emb = backbone.get_layer("patch_embedding")
    std = np.std(ops.convert_to_numpy(emb.positional_embedding))
    assert abs(std - 256**-0.5) < 0.2 * 256**-0.5
    assert emb.projection.bias is None  # conv1 has no bias
    head = tiny_task().token_head
    head_std = np.std(ops.convert_to_numpy(head.classifier.kernel))
    assert abs(head_std - 32**-0.5) < 0.2 * 32**-0.5
    assert not np.any(ops.convert_to_numpy(head.classifier.bias))


def test_position_table_is_interpolated_for_other_sizes():
    backbone = SuperClassBackbone(
        **{**TINY, "image_shape": (48, 48, 3)}, position_grid_size=(4, 4)
    )
    emb = backbone.get_layer("patch_embedding")
    assert emb.positional_embedding.shape == (17, 32)
    assert backbone(images(2, 48))["sequence_output"].shape == (2, 37, 32)
    # Same grid: the table is used as is.
    same = SuperClassBackbone(**TINY)
    table = ops.convert_to_numpy(
        same.get_layer("patch_embedding")._positions_for(4, 4)
    )
    np.testing.assert_array_equal(
        table,
        ops.convert_to_numpy(
            same.get_layer("patch_embedding").positional_embedding
        ),
    )


def test_bad_image_size_and_unknown_preset():
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        SuperClassBackbone(**{**TINY, "image_shape": (30, 32, 3)})
    with pytest.raises(ValueError, match="superclass_vit_b16"):
        SuperClassClassifier.from_preset("superclass_vit_x99")
    with pytest.raises(ValueError, match="architecture presets are"):
        SuperClassBackbone.from_preset("vit_huge_typo")
    with pytest.raises(ValueError, match="Did you mean 'superclass_vit_s16'"):
        SuperClassBackbone.from_preset("superclass_vit_s61")


def test_vocabulary_mismatch_between_loss_and_head():
    model = tiny_task()
    with pytest.raises(ValueError, match="vocabulary of 51"):
        model.compile(loss=SuperClassLoss(V + 1))


def test_fit_learns_and_updates_idf_only_in_training():
    model = tiny_task()
    model.compile(learning_rate=3e-3, warmup_steps=0)
    dataset, x, ids = token_dataset()
    history = model.fit(dataset, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0]
    stats = model.idf_statistics
    assert float(ops.convert_to_numpy(stats.num_samples)) == 8 * 4
    expected = np.zeros(V)
    for start in range(0, 16, 4):  # cap_fq = sum of per-batch means
        for row in ids[start : start + 4]:
            expected[row[row >= 0]] += 1 / 4
    cap_fq = ops.convert_to_numpy(stats.cap_fq) - ops.convert_to_numpy(
        stats.cap_fq_error
    )
    np.testing.assert_allclose(cap_fq, 8 * expected, rtol=1e-5)
    model.evaluate(dataset, verbose=0)
    assert float(ops.convert_to_numpy(stats.num_samples)) == 8 * 4
    assert "top5_precision" in history.history


def test_weight_decay_skips_one_dimensional_weights():
    model = tiny_task()
    optimizer = model.optimizer
    for variable in model.trainable_variables:
        decayed = optimizer._use_weight_decay(variable)
        assert decayed == (len(variable.shape) >= 2), variable.path


def test_warmup_cosine_schedule():
    model = tiny_task()
    model.compile(learning_rate=1e-3, warmup_steps=10, total_steps=110)
    schedule = model.optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.0, abs=1e-9)
    assert float(schedule(5)) == pytest.approx(5e-4, rel=1e-4)
    assert float(schedule(10)) == pytest.approx(1e-3, rel=1e-4)
    assert float(schedule(60)) == pytest.approx(5e-4, rel=1e-3)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-8)
    # The default warmup (500) on a 20-step run: said, as the rate would
    # stay near zero.
    with pytest.warns(UserWarning, match="never reaches learning_rate"):
        model.compile(total_steps=20)
    with pytest.raises(TypeError, match="total_steps must be a whole"):
        model.compile(total_steps="20")


def test_mixed_bfloat16_and_remat_track_float32():
    """bf16 steps (remat on) follow the float32 loss; IDF stays float32."""
    _, x, ids = token_dataset(n=8)
    reference = tiny_task()
    weights = reference.get_weights()
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = tiny_task(backbone={"remat": True})
    assert model.backbone.compute_dtype == "bfloat16"
    assert model.token_head.compute_dtype == "bfloat16"
    model.set_weights(weights)
    losses = {id(reference): [], id(model): []}
    for step in range(3):
        batch = slice(4 * (step % 2), 4 * (step % 2) + 4)
        for task in (reference, model):
            logs = task.train_on_batch(x[batch], ids[batch], return_dict=True)
            losses[id(task)].append(logs["loss"])
    np.testing.assert_allclose(
        losses[id(model)], losses[id(reference)], rtol=2e-2
    )
    for name in ("cap_fq", "num_samples"):
        variable = getattr(model.idf_statistics, name)
        assert variable.dtype == "float32"
        np.testing.assert_array_equal(
            ops.convert_to_numpy(variable),
            ops.convert_to_numpy(getattr(reference.idf_statistics, name)),
        )
    logits = model.predict(images(2), verbose=0)
    assert logits.shape == (2, V)


def test_remat_does_not_change_outputs():
    plain = SuperClassBackbone(**TINY)
    remat = SuperClassBackbone(**TINY, remat=True)
    remat.set_weights(plain.get_weights())
    x = images(2)
    np.testing.assert_allclose(
        ops.convert_to_numpy(plain(x)["pooled_output"]),
        ops.convert_to_numpy(remat(x)["pooled_output"]),
        atol=1e-6,
    )


def trained_tiny_task():
    model = tiny_task(head_mlp_layers=1)
    dataset, _, _ = token_dataset(n=8)
    model.fit(dataset, epochs=1, verbose=0)
    return model


def test_preset_round_trip_keeps_weights_and_idf_statistics(tmp_path):
    model = trained_tiny_task()
    model.save_to_preset(str(tmp_path))
    x = images(2)
    expected = model.predict(x, verbose=0)
    # keras-hub refuses `Task.from_preset` on its base class; the task class
    # and the generic `Backbone.from_preset` both load the directory.
    for load_weights in (True,):
        loaded = SuperClassClassifier.from_preset(
            str(tmp_path), load_weights=load_weights
        )
        assert isinstance(loaded, SuperClassClassifier)
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0), expected, atol=1e-5
        )
        for name in ("cap_fq", "num_samples"):
            np.testing.assert_array_equal(
                ops.convert_to_numpy(getattr(loaded.idf_statistics, name)),
                ops.convert_to_numpy(getattr(model.idf_statistics, name)),
            )
    backbone = keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert isinstance(backbone, SuperClassBackbone)
    np.testing.assert_allclose(
        ops.convert_to_numpy(backbone(x)["pooled_output"]),
        ops.convert_to_numpy(model.backbone(x)["pooled_output"]),
        atol=1e-5,
    )


SAVE_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_superclass_model import trained_tiny_task, images
model = trained_tiny_task()
model.save_to_preset({out!r})
np.save({out!r} + "/expected.npy", model.predict(images(2), verbose=0))
"""


@pytest.mark.slow
def test_preset_saved_on_another_backend_loads_with_same_outputs(tmp_path):
    backends = ["jax", "tensorflow", "torch"]
    here = keras.config.backend()
    other = backends[(backends.index(here) + 1) % 3]
    out = str(tmp_path / "preset")
    script = SAVE_SCRIPT.format(
        repo=REPO, tests=os.path.join(REPO, "tests"), out=out
    )
    env = {**os.environ, "KERAS_BACKEND": other}
    subprocess.run(
        [sys.executable, "-c", script], check=True, env=env, timeout=300
    )
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["registered_name"].startswith("keras_superclass")
    loaded = SuperClassClassifier.from_preset(out)
    np.testing.assert_allclose(
        loaded.predict(images(2), verbose=0),
        np.load(os.path.join(out, "expected.npy")),
        atol=1e-4,
    )


def test_architecture_presets_build_with_overrides():
    model = SuperClassClassifier.from_preset(
        "superclass_vit_ti16",
        vocabulary_size=100,
        image_shape=(64, 64, 3),
        num_layers=1,
    )
    assert model.vocabulary_size == 100
    assert model.backbone.num_layers == 1
    assert model.predict(images(1, 64), verbose=0).shape == (1, 100)


@pytest.mark.parametrize("normalize", [False, True])
def test_converter_takes_images_as_users_hold_them(normalize):
    from keras_superclass.layers import SuperClassImageConverter

    converter = SuperClassImageConverter(16, normalize=normalize)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 24, 3), "uint8")
    gray = rgb[..., 0]

    def prepare(images):
        return ops.convert_to_numpy(converter(images))

    expected = prepare(rgb)
    # What `np.asarray(PIL.Image.open(path))` gives: gray, RGBA, floats.
    np.testing.assert_allclose(
        prepare(np.dstack([rgb, rgb[..., :1]])), expected
    )
    np.testing.assert_allclose(prepare(rgb.astype("float32")), expected)
    # Float pixels already at the output size are pixels, not prepared.
    square = rgb[:16, :16]
    np.testing.assert_allclose(
        prepare(square.astype("float32")), prepare(square), atol=1e-6
    )
    np.testing.assert_allclose(prepare(gray), prepare(np.dstack([gray] * 3)))
    np.testing.assert_allclose(prepare(gray[..., None]), prepare(gray))
    np.testing.assert_allclose(prepare([rgb, rgb[:17]])[0], expected)
    with pytest.raises(ValueError, match=r"scaled to \[0, 1\]"):
        prepare(rgb.astype("float32") / 255)
    with pytest.raises(ValueError, match=r"got shape \(20, 24, 2\)"):
        prepare(rgb[..., :2])
    # Its own output goes through unchanged (a task's predict prepares
    # images its preprocessor already prepared).
    np.testing.assert_allclose(prepare(expected), expected)


def test_on_device_normalisation_equals_host_normalisation(tmp_path):
    from keras_superclass.layers import ImageNormalization
    from keras_superclass.layers import SuperClassImageConverter
    from keras_superclass.utils.constants import OPENAI_MEAN
    from keras_superclass.utils.constants import OPENAI_STD

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (3, 32, 32, 3)).astype("uint8")
    expected = (pixels / 255.0 - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)
    device = ops.convert_to_numpy(ImageNormalization()(pixels))
    np.testing.assert_allclose(device, expected, atol=1e-5)
    # Inside tf.data (the host path) the same layer gives the same numbers.
    batches = tf.data.Dataset.from_tensors(pixels).map(ImageNormalization())
    host = next(iter(batches)).numpy()
    np.testing.assert_allclose(host, expected, atol=1e-5)

    keras.utils.set_random_seed(0)
    plain = tiny_task()
    keras.utils.set_random_seed(0)
    on_device = tiny_task(normalize_images=True)
    on_device.set_weights(plain.get_weights())
    np.testing.assert_allclose(
        on_device.predict(pixels, verbose=0),
        plain.predict(host, verbose=0),
        atol=1e-4,
    )
    # The converter normalises only for tasks that do not do it themselves,
    # and a second application changes nothing.
    for normalize, want in ((False, pixels), (True, expected)):
        converter = SuperClassImageConverter(32, normalize=normalize)
        once = ops.convert_to_numpy(converter(pixels))
        np.testing.assert_allclose(once, want, atol=1e-5)
        np.testing.assert_allclose(ops.convert_to_numpy(converter(once)), once)

    # The flag is part of the config and survives a preset round trip.
    on_device.save_to_preset(str(tmp_path))
    loaded = SuperClassClassifier.from_preset(str(tmp_path))
    assert loaded.normalize_images
    np.testing.assert_allclose(
        loaded.predict(pixels, verbose=0),
        on_device.predict(pixels, verbose=0),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="one value per channel"):
        ImageNormalization(mean=(0.5,), std=(0.2, 0.2, 0.2))
