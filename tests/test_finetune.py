"""The fine-tuning task: layer-wise decay, presets, the CLI walk."""

import json
import os

import keras
import keras_hub
import numpy as np
import pytest

from keras_superclass.models import SuperClassClassifier
from keras_superclass.models import SuperClassImageClassifier

TINY_VIT = dict(
    image_shape=(16, 16, 3),
    patch_size=8,
    num_layers=2,
    num_heads=2,
    hidden_dim=8,
    mlp_dim=16,
)


def save_pretrained(path):
    """A tiny pretrained SuperClass preset at `path`, as `export` writes it
    (uint8 in, normalised on the device)."""
    SuperClassClassifier.from_preset(
        "superclass_vit_ti16",
        vocabulary_size=10,
        normalize_images=True,
        **TINY_VIT,
    ).save_to_preset(str(path))


def tiny_classifier(**kwargs):
    return SuperClassImageClassifier.from_preset(
        "superclass_vit_ti16", num_classes=3, **{**TINY_VIT, **kwargs}
    )


def test_every_task_takes_recipe_keywords_for_its_auto_optimizer_only():
    from keras_superclass.models import ImageTextModel

    vit = {k: v for k, v in TINY_VIT.items() if k != "image_shape"}
    classifier = tiny_classifier(compile=False)
    tasks = {
        "finetune": classifier,
        "superclass": SuperClassClassifier.from_preset(
            "superclass_vit_ti16",
            vocabulary_size=11,
            image_shape=(16, 16, 3),
            compile=False,
            **vit,
        ),
        "image_text": ImageTextModel(
            classifier.backbone,
            text_encoder={
                "vocabulary_size": 11,
                "sequence_length": 4,
                "hidden_dim": 8,
                "num_layers": 1,
                "num_heads": 2,
            },
            embed_dim=8,
            compile=False,
        ),
    }
    for name, task in tasks.items():
        with pytest.raises(ValueError, match="only apply to the 'auto'"):
            task.compile(optimizer="adam", weight_decay=0.01)
        task.compile(weight_decay=0.01, beta_2=0.95)
        assert task.optimizer.weight_decay == pytest.approx(0.01), name
        assert task.optimizer.beta_2 == pytest.approx(0.95), name


def test_layer_decay_multipliers_and_update_match_hand_computation():
    model = tiny_classifier(compile=False, num_layers=1)
    lr, decay, wd = 0.1, 0.5, 0.2
    model.compile(
        learning_rate=lr, warmup_steps=0, layer_decay=decay, weight_decay=wd
    )
    optimizer = model.optimizer
    backbone = model.backbone
    # Layer ids: embeddings 0, block 1, the rest L + 1 = 2 (full rate).
    expected = {}
    for v in backbone.patch_embedding.trainable_variables:
        expected[id(v)] = decay**2
    for v in backbone.ln_pre.trainable_variables:
        expected[id(v)] = decay**2
    for v in backbone.transformer_blocks[0].trainable_variables:
        expected[id(v)] = decay
    variables = model.trainable_variables
    multipliers = [optimizer.learning_rate_multiplier(v) for v in variables]
    assert multipliers == [expected.get(id(v), 1.0) for v in variables]
    assert sorted(set(multipliers)) == [0.25, 0.5, 1.0]

    # One AdamW step by hand: decoupled decay at the variable's own rate
    # (not on 1-D weights), then Adam's first bias-corrected step.
    rng = np.random.default_rng(0)
    before = [keras.ops.convert_to_numpy(v) for v in variables]
    grads = [rng.normal(size=w.shape).astype("float32") for w in before]
    if keras.config.backend() == "jax":
        # The JAX trainer's path (stateless, jitted): eager jax would
        # compile every op of every variable shape, which is slow.
        import jax

        optimizer.build(variables)
        after, _ = jax.jit(optimizer.stateless_apply)(
            [v.value for v in optimizer.variables],
            grads,
            [v.value for v in variables],
        )
    else:
        tensors = [keras.ops.convert_to_tensor(g) for g in grads]
        optimizer.apply(tensors, variables)
        after = variables
    b1, b2, eps = optimizer.beta_1, optimizer.beta_2, optimizer.epsilon
    for v, w, g, m in zip(after, before, grads, multipliers):
        rate = lr * m
        if w.ndim >= 2:
            w = w - w * wd * rate
        m1, v1 = (1 - b1) * g, (1 - b2) * g * g
        alpha = rate * np.sqrt(1 - b2) / (1 - b1)
        want = w - alpha * m1 / (np.sqrt(v1) + eps)
        got = keras.ops.convert_to_numpy(v)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_preset_round_trip_and_pretrained_encoder(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (2, 20, 24, 3))
    images = images.astype("uint8")
    # A pretrained task preset: its encoder and image converter carry over.
    task = SuperClassClassifier.from_preset(
        "superclass_vit_ti16", vocabulary_size=10, **TINY_VIT
    )
    task.save_to_preset(tmp_path / "pretrained")
    model = SuperClassImageClassifier.from_preset(
        tmp_path / "pretrained", num_classes=4
    )
    for a, b in zip(model.backbone.weights, task.backbone.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )
    assert model.preprocessor.image_converter.normalize
    model.save_to_preset(tmp_path / "finetuned")
    loaded = SuperClassImageClassifier.from_preset(tmp_path / "finetuned")
    assert loaded.num_classes == 4
    inputs = model.preprocessor(images)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(inputs)),
        keras.ops.convert_to_numpy(model(inputs)),
        atol=1e-6,
    )
    encoder = keras_hub.models.Backbone.from_preset(str(tmp_path / "finetuned"))
    assert type(encoder).__name__ == "SuperClassBackbone"
    with pytest.raises(ValueError, match="Unknown preset") as error:
        SuperClassImageClassifier.from_preset(tmp_path / "missing")
    assert "Did you mean" not in str(error.value)
    # A misspelt directory: the one beside it is named.
    near = str(tmp_path / "finetuned")
    with pytest.raises(ValueError, match=f"Did you mean '{near}'"):
        SuperClassImageClassifier.from_preset(tmp_path / "finetund")


def test_finetune_api_runs_without_misleading_keras_warnings(tmp_path):
    import warnings

    from PIL import Image

    from keras_superclass.training.finetune import finetune

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        for name, colour in (("red", (220, 30, 30)), ("blue", (30, 40, 220))):
            folder = tmp_path / split / name
            os.makedirs(folder)
            for i in range(count):
                pixels = np.full((20, 24, 3), colour, "uint8")
                pixels += rng.integers(0, 30, pixels.shape, dtype="uint8")
                Image.fromarray(pixels).save(folder / f"{i}.png")
    save_pretrained(tmp_path / "pretrained")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, results = finetune(
            str(tmp_path / "pretrained"),
            str(tmp_path / "train"),
            test=str(tmp_path / "test"),
            epochs=2,
            batch_size=4,
            verbose=0,
        )
    # Keras's "shuffle=True ... will be ignored" and "Your input ran out
    # of data" say nothing true about a fine-tuning run.
    misleading = ("`shuffle=True` was passed", "ran out of data")
    said = [str(w.message) for w in caught]
    assert not [m for m in said if any(t in m for t in misleading)], said
    assert results["class_names"] == ["blue", "red"]
    assert results["train_examples"] == 12


def test_finetune_refuses_a_table_whose_test_rows_are_its_training_rows(
    tmp_path,
):
    from keras_superclass.training.finetune import finetune

    table = tmp_path / "labels.csv"
    table.write_text("file,label\na.png,cat\nb.png,dog\n")
    # Checked before any model is built: the preset need not exist yet.
    with pytest.raises(ValueError, match="has no 'split' column"):
        finetune("unused_preset", str(table))
    with pytest.raises(TypeError, match="epochs must be a whole number"):
        finetune("unused_preset", str(table), epochs="1")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        finetune("unused_preset", str(table), batch_size=0)


@pytest.mark.skipif(
    keras.config.backend() != "tensorflow",
    reason="The CLI walk is backend-neutral glue (data listing, fit, preset "
    "writing) over pieces the tests above run on every backend; once per "
    "suite run (tensorflow: the fastest fit here) keeps CI time down.",
)
def test_finetune_cli_walk_on_demo_data(tmp_path, monkeypatch, capsys):
    from keras_superclass.cli.main import main
    from keras_superclass.data import write_demo_dataset

    monkeypatch.chdir(tmp_path)
    write_demo_dataset("demo", num_train=32, num_test=16, progress=False)
    # The classifier must take the preset's converter, normalising.
    save_pretrained("pretrained")
    args = "finetune --preset pretrained --images demo/train --test demo/test"
    args += " --label-feature label_shape --epochs 2 --batch-size 16"
    assert main([*args.split(), "--out", "classifier"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy: " in out
    with open("classifier/finetune_results.json") as f:
        results = json.load(f)
    assert results["train_examples"] == 32
    assert results["num_classes"] == len(results["class_names"]) == 5
    assert 0.0 <= results["accuracy"] <= 1.0
    assert len(results["history"]["loss"]) == 2
    model = SuperClassImageClassifier.from_preset("classifier")
    assert model.num_classes == 5
    assert not os.path.exists("classifier.tmp")
    # Run again into the same --out: refused before training, the first
    # classifier left as it was.
    written = sorted(os.listdir("classifier"))
    assert main([*args.split(), "--out", "classifier"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert sorted(os.listdir("classifier")) == written
    # `predict` names the classes as fine-tuning saw them.
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), "uint8")
    Image.fromarray(pixels).save("photo.png")
    assert (
        main(["predict", "photo.png", "--preset", "classifier", "--json"]) == 0
    )
    labels = json.loads(capsys.readouterr().out.strip())["labels"]
    assert sorted(t["label"] for t in labels) == sorted(results["class_names"])
    logits = model.predict(model.preprocessor.image_converter([pixels]))
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(logits))[0]
    names = results["class_names"]
    for entry in labels:
        assert entry["score"] == pytest.approx(
            float(expected[names.index(entry["label"])]), abs=1e-5
        )


@pytest.mark.slow
@pytest.mark.skipif(
    keras.config.backend() != "jax",
    reason="The notebook selects its backend itself (KERAS_BACKEND in a "
    "cell, jax here); executing it once per suite run keeps CI time down.",
)
def test_presets_and_fine_tuning_notebook_runs(tmp_path, run_notebook):
    outputs = run_notebook(
        "04_presets_and_fine_tuning.ipynb", tmp_path, FINETUNE_SMALL="1"
    ).text
    assert "same features: True" in outputs
    assert "fine-tuned > from scratch: True" in outputs
    assert (tmp_path / "finetune_vs_scratch.png").stat().st_size > 0
    assert (tmp_path / "finetuned_preset" / "finetune_results.json").exists()
