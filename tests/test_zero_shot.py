"""Zero-shot classification and image <-> text retrieval after LiT.

That LiT leaves the locked weights bit-identical is checked in
test_image_text.py.
"""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_superclass.evaluation.retrieval import retrieval_recall
from keras_superclass.evaluation.zero_shot import class_text_embeddings
from keras_superclass.evaluation.zero_shot import load_templates
from keras_superclass.layers import SuperClassImageConverter
from keras_superclass.models import ImageTextModel
from keras_superclass.models import ImageTextPreprocessor
from keras_superclass.models import SuperClassBackbone


def tiny_model(sequence_length=8):
    backbone = SuperClassBackbone(
        image_shape=(16, 16, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )
    preprocessor = ImageTextPreprocessor(
        SuperClassImageConverter(16), "clip", sequence_length
    )
    return ImageTextModel(
        backbone,
        text_encoder={
            "vocabulary_size": 49408,
            "sequence_length": sequence_length,
            "hidden_dim": 16,
            "num_layers": 1,
            "num_heads": 2,
        },
        embed_dim=8,
        preprocessor=preprocessor,
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
def test_zero_shot_notebook_runs(tmp_path, run_notebook):
    run = run_notebook("07_zero_shot.ipynb", tmp_path, ZEROSHOT_SMALL="1")
    outputs, text = run.outputs, run.text
    assert "encoder unchanged: True" in text
    assert "label_shape: zero-shot top-1" in text
    assert "same text features: True" in text
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 2  # the two retrieval grids


ENCODER = (  # demo_tiny at 32 px, 2 layers: seconds per 100 steps
    "model.backbone.image_shape=[32,32,3]",
    "model.backbone.patch_size=4",
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
SMALL = ("data.image_size=32", "data.deterministic=true",
         "training.warmup_steps=20",
         "training.learning_rate=2e-3")  # fmt: skip
PRETRAIN = ("training.total_steps=400", "training.steps_per_epoch=400")
LIT = ("training.total_steps=300", "training.steps_per_epoch=300")
# Measured in this setting (jax, deterministic reads): shape 0.293 (chance
# 0.2), colour 0.988 (chance 0.167), recall@10 0.47 (chance 0.04). Shape
# is what a 400-step 2-layer encoder barely separates; see the README.
SHAPE_MIN = 0.25


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
    (tmp_path / "colours.txt").write_text(
        "red\ngreen\nblue\nyellow\npurple\norange\n"
    )
    (tmp_path / "templates.txt").write_text(
        "a photo of a {}.\na picture of the {}.\n"
    )
    for args in (
        ["demo", "--data-only", "--num-train", "1024", "--num-test", "256"],
        ["train", "--config", "demo_tiny", *ENCODER, *SMALL, *PRETRAIN],
        ["export", "--run", "runs/demo_tiny", "--out", "presets/demo_tiny"],
        ["train", "--config", "lit_tiny", *TEXT, *SMALL, *LIT],
        ["export", "--run", "runs/lit_tiny", "--out", "presets/lit_tiny"],
        ["zeroshot", "--preset", "presets/lit_tiny", "--images",
         "demo_output/shards/test", "--classnames", "shapes.txt",
         "--templates", "templates.txt", "--label-feature", "label_shape",
         "--out", "zero_shot.json"],
        ["zeroshot", "--preset", "presets/lit_tiny", "--images",
         "demo_output/shards/test", "--classnames", "colours.txt",
         "--templates", "templates.txt", "--label-feature", "label_color",
         "--out", "zero_shot_colour.json"],
        ["retrieval", "--preset", "presets/lit_tiny", "--captions",
         "demo_output/shards/test", "--out", "retrieval.json"],
    ):  # fmt: skip
        code = main(args)
        assert code == 0, f"{args} exited {code}:\n{capsys.readouterr().err}"
    out = capsys.readouterr().out
    # Mistakes end in one line that names them, not in a traceback or an
    # "empty dataset".
    (tmp_path / "shuffled.txt").write_text(
        "square\ncircle\ntriangle\ncross\nstar\n"
    )
    os.makedirs("flat")
    Image.new("RGB", (8, 8)).save("flat/0.png")
    zeroshot = ["zeroshot", "--preset", "presets/lit_tiny", "--classnames",
                "shapes.txt"]  # fmt: skip
    for args, said in (
        (zeroshot + ["--images", "demo_output/shards/tset"], "does not exist"),
        (zeroshot + ["--images", "demo_output/shards/test"],
         "no integer feature 'label'; their integer features: ["),
        (zeroshot + ["--images", "demo_output/shards/test"], "'label_shape'"),
        (zeroshot + ["--images", "flat"], "holds images but no shards"),
        (zeroshot[:-1] + ["shuffled.txt", "--images", "demo_output/shards/test",
                          "--label-feature", "label_shape"],
         "are the data's classes in another order"),
        (zeroshot + ["--images", "flat/0.png"], "is an image, not a shard"),
        (["retrieval", "--preset", "presets/lit_tiny", "--captions",
          "demo_output/shards/tset"], "does not exist"),
    ):  # fmt: skip
        assert main(args) == 2, args
        error = capsys.readouterr().err
        assert said in error and "Traceback" not in error, args
    shape, colour, retrieval = (
        json.loads((tmp_path / f"{name}.json").read_text())
        for name in ("zero_shot", "zero_shot_colour", "retrieval")
    )
    # Chance: 1/5 for shape, 1/6 for colour.
    assert shape["num_images"] == 256 and shape["top1"] > SHAPE_MIN
    assert colour["top1"] > 0.4
    # Top-5 of 5 shapes is always 1: left out; of 6 colours it is kept.
    assert shape["top5"] is None and colour["top5"] >= colour["top1"]
    # 256 captions: chance recall@10 is 10 / 256 = 0.04.
    assert retrieval["image_to_text_R@10"] > 0.1
    # `demo --data-only` counts its own two stages, not the demo's five.
    assert "[2/2] Building the word and synset vocabularies" in out
    # Each summary starts its own line, after the progress bar's.
    assert "\nzero-shot on 256 images, 5 classes, 2 templates: top-1 " in out
    assert ", 6 classes, 2 templates: top-1 0." in out and "top-5" in out
