"""LiT, zero-shot classification and image <-> text retrieval."""

import json
import os

import keras
import numpy as np
import pytest

from keras_superclass.evaluation.retrieval import retrieval_recall
from keras_superclass.evaluation.zero_shot import class_text_embeddings
from keras_superclass.evaluation.zero_shot import load_templates
from keras_superclass.layers import SuperClassImageConverter
from keras_superclass.models import ImageTextModel
from keras_superclass.models import ImageTextPreprocessor
from keras_superclass.models import SuperClassBackbone


def tiny_model(sequence_length=8, vocabulary_size=49408, preprocessor=True):
    backbone = SuperClassBackbone(
        image_shape=(16, 16, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )
    if preprocessor:
        preprocessor = ImageTextPreprocessor(
            SuperClassImageConverter(16), "clip", sequence_length
        )
    return ImageTextModel(
        backbone,
        text_encoder={
            "vocabulary_size": vocabulary_size,
            "sequence_length": sequence_length,
            "hidden_dim": 16,
            "num_layers": 1,
            "num_heads": 2,
        },
        embed_dim=8,
        preprocessor=preprocessor or None,
        compile=False,
    )


def test_retrieval_recall_matches_numpy():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 8)).astype("float32")
    texts = images + rng.normal(scale=1.5, size=images.shape).astype("float32")
    recall = retrieval_recall(images, texts, ks=(1, 5, 10))
    scores = images @ texts.T
    for k in (1, 5, 10):
        # NumPy: the true pair among the top k of its row (column).
        top_texts = np.argsort(-scores, axis=1)[:, :k]
        top_images = np.argsort(-scores, axis=0)[:k, :]
        expected_i2t = np.mean([i in top_texts[i] for i in range(40)])
        expected_t2i = np.mean([j in top_images[:, j] for j in range(40)])
        assert recall[f"image_to_text_R@{k}"] == pytest.approx(expected_i2t)
        assert recall[f"text_to_image_R@{k}"] == pytest.approx(expected_t2i)
    assert 0 < recall["image_to_text_R@1"] < recall["image_to_text_R@10"] < 1


def test_lit_keeps_locked_weights_bit_identical_while_text_tower_trains():
    keras.utils.set_random_seed(0)
    # A 64-id text vocabulary: the test is about which weights move.
    model = tiny_model(vocabulary_size=64, preprocessor=False)
    model.lock_image_tower(unlocked_groups=1)  # the reference LiT setting
    # One step; XLA compilation would cost more than it saves here.
    model.compile(
        learning_rate=1e-2,
        warmup_steps=0,
        total_steps=1,
        jit_compile=keras.config.backend() == "jax",
    )
    rng = np.random.default_rng(0)
    x = {
        "images": rng.uniform(-1, 1, (4, 16, 16, 3)).astype("float32"),
        "token_ids": rng.integers(1, 63, (4, 8)).astype("int32"),
    }
    x["token_ids"][:, -1] = 63  # the end token: the largest id
    locked = [w.numpy().copy() for w in model.backbone.weights]
    text = [w.numpy().copy() for w in model.text_encoder.trainable_weights]
    projection = model.image_projection.kernel.numpy().copy()
    model.fit(x, batch_size=4, epochs=1, verbose=0, shuffle=False)
    for before, after in zip(locked, model.backbone.weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert all(
        not np.array_equal(b, a.numpy())
        for b, a in zip(text, model.text_encoder.trainable_weights)
    )
    assert not np.array_equal(projection, model.image_projection.kernel)


def test_class_embeddings_average_normalised_prompts():
    model = tiny_model()
    templates = ["a photo of a {}.", "a {} shape."]
    weights = class_text_embeddings(model, ["circle", "star"], templates)
    ids = model.preprocessor.tokenize(["a photo of a star.", "a star shape."])
    prompts = keras.ops.convert_to_numpy(model.encode_texts(ids))
    expected = prompts.mean(0) / np.linalg.norm(prompts.mean(0))
    np.testing.assert_allclose(weights[1], expected, atol=1e-5)
    assert len(load_templates()) == 80
    with pytest.raises(ValueError, match="exactly one"):
        class_text_embeddings(model, ["circle"], ["no placeholder"])


@pytest.mark.skipif(
    keras.config.backend() != "jax",
    reason="The notebook selects its backend itself (jax here); one "
    "execution per suite run keeps CI time down.",
)
def test_zero_shot_notebook_runs(tmp_path):
    import nbclient
    import nbformat

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    notebook = nbformat.read(
        os.path.join(repo, "colab", "07_zero_shot.ipynb"), as_version=4
    )
    os.environ["ZEROSHOT_SMALL"] = "1"
    os.environ["PYTHONPATH"] = (
        repo + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    client = nbclient.NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    ]
    text = "".join(output.get("text", "") for output in outputs)
    assert "encoder unchanged: True" in text
    assert "label_shape: zero-shot top-1" in text
    assert "same text features: True" in text
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 2  # the two retrieval grids


ENCODER = (  # demo_tiny at 32 px, 2 layers: seconds per 100 steps
    "model.backbone.image_shape=[32,32,3]",
    "model.backbone.num_layers=2",
    "model.backbone.hidden_dim=64",
    "model.backbone.mlp_dim=128",
    "model.backbone.num_heads=2",
)
TEXT = (
    "model.text_encoder.hidden_dim=64",
    "model.text_encoder.num_layers=1",
    "model.text_encoder.num_heads=2",
    "model.text_encoder.sequence_length=16",
    "model.embed_dim=64",
)
STEPS = ("training.total_steps=300", "training.steps_per_epoch=300")


@pytest.mark.skipif(
    keras.config.backend() != "jax",
    reason="Two short trainings: once per suite run (jax); the pieces run "
    "on every backend in the tests above.",
)
def test_lit_on_demo_encoder_zero_shot_and_retrieval_cli(
    tmp_path, monkeypatch, capsys
):
    """The user path: demo data -> SuperClass encoder -> export -> LiT ->
    export -> `zeroshot` and `retrieval` on the held-out scenes."""
    from keras_superclass.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes.txt").write_text(
        "circle\nsquare\ntriangle\ncross\nstar\n"
    )
    (tmp_path / "templates.txt").write_text(
        "a photo of a {}.\na picture of the {}.\n"
    )
    small = ["data.image_size=32", "training.warmup_steps=20", *STEPS]
    for args in (
        ["demo", "--data-only", "--num-train", "1024", "--num-test", "256"],
        ["train", "--config", "demo_tiny", *ENCODER, *small],
        ["export", "--run", "runs/demo_tiny", "--out", "presets/demo_tiny"],
        ["train", "--config", "lit_tiny", *TEXT, *small],
        ["export", "--run", "runs/lit_tiny", "--out", "presets/lit_tiny"],
        ["zeroshot", "--preset", "presets/lit_tiny", "--images",
         "demo_output/shards/test", "--classnames", "shapes.txt",
         "--templates", "templates.txt", "--label-feature", "label_shape",
         "--out", "zero_shot.json"],
        ["retrieval", "--preset", "presets/lit_tiny", "--captions",
         "demo_output/shards/test", "--out", "retrieval.json"],
    ):  # fmt: skip
        code = main(args)
        assert code == 0, f"{args} exited {code}:\n{capsys.readouterr().err}"
    zero_shot = json.loads((tmp_path / "zero_shot.json").read_text())
    retrieval = json.loads((tmp_path / "retrieval.json").read_text())
    # 5 shapes: chance is 0.2.
    assert zero_shot["num_images"] == 256 and zero_shot["top1"] > 0.4
    # 256 captions: chance recall@10 is 10 / 256 = 0.04.
    assert retrieval["image_to_text_R@10"] > 0.1
    assert "top-1" in capsys.readouterr().out
