"""Evaluation protocols: features, linear probe, kNN, few-shot, CLI."""

import json
import os

import keras
import numpy as np
import pytest

from keras_superclass.evaluation import RidgeClassifier
from keras_superclass.evaluation import evaluate_encoder
from keras_superclass.evaluation import evaluate_features
from keras_superclass.evaluation import extract_features
from keras_superclass.evaluation import few_shot_accuracy
from keras_superclass.evaluation import format_results_table
from keras_superclass.evaluation import knn_accuracy
from keras_superclass.evaluation import knn_predict
from keras_superclass.evaluation import linear_probe
from keras_superclass.evaluation import top_k_accuracy
from keras_superclass.evaluation import write_results
from keras_superclass.models import SuperClassBackbone
from keras_superclass.models import SuperClassClassifier


def gaussian_classes(count, num_classes=10, dim=32, spread=1.0, seed=0):
    """Features around one random centre per class (+ a common offset)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(num_classes, dim))
    labels = rng.integers(0, num_classes, count)
    features = centres[labels] + spread * rng.normal(size=(count, dim)) + 5.0
    return features.astype("float32"), labels


@pytest.fixture(scope="module")
def tiny_backbone():
    """One tiny ViT shared by the tests of this module (never modified)."""
    return SuperClassBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
    )


# === Linear probe ===


def test_linear_probe_separable_and_random_labels():
    x_train, y_train = gaussian_classes(1000, seed=0)
    x_test, y_test = gaussian_classes(400, seed=1)
    top1, probe = linear_probe(
        x_train,
        y_train,
        x_test,
        y_test,
        epochs=5,
        batch_size=100,
        warmup_epochs=1,
    )
    assert top1 > 0.9
    assert probe.output_shape == (None, 10)
    # The BatchNorm has no affine parameters: the kernel and bias only.
    assert [tuple(w.shape) for w in probe.trainable_weights] == [
        (32, 10),
        (10,),
    ]

    rng = np.random.default_rng(5)
    top1, _ = linear_probe(
        x_train,
        rng.integers(0, 10, len(x_train)),
        x_test,
        rng.integers(0, 10, len(x_test)),
        epochs=5,
        batch_size=100,
        warmup_epochs=1,
    )
    assert top1 < 0.2  # chance is 0.1


def test_linear_probe_rejects_bad_inputs():
    x, y = gaussian_classes(20)
    with pytest.raises(ValueError, match="feature rows but"):
        linear_probe(x, y[:-1], x, y, epochs=1)
    with pytest.raises(ValueError, match="empty"):
        linear_probe(x[:0], y[:0], x, y, epochs=1)
    with pytest.raises(ValueError, match="dimensions"):
        linear_probe(x, y, x[:, :3], y, epochs=1)


def test_every_protocol_rejects_features_of_two_encoders():
    x, y = gaussian_classes(20)
    protocols = {
        "linear_probe": lambda a, b: linear_probe(a, y, b, y, epochs=1),
        "knn_accuracy": lambda a, b: knn_accuracy(a, y, b, y),
        "knn_predict": lambda a, b: knn_predict(a, y, b),
        "few_shot": lambda a, b: few_shot_accuracy(a, y, b, y, shots=(1,)),
        "evaluate_features": lambda a, b: evaluate_features(a, y, b, y),
    }
    for name, protocol in protocols.items():
        with pytest.raises(ValueError, match="32 dimensions but.* 3;"):
            protocol(x, x[:, :3])
            pytest.fail(f"{name} accepted 32- and 3-dimensional features")


def test_evaluate_features_stops_before_the_probe_when_shots_cannot_run(
    monkeypatch,
):
    from keras_superclass.evaluation import results

    def must_not_run(*args, **kwargs):
        raise AssertionError("the linear probe ran before the shot check")

    monkeypatch.setattr(results, "linear_probe", must_not_run)
    x = gaussian_classes(20)[0]
    y = np.arange(20) % 4  # 5 examples per class
    with pytest.raises(ValueError, match="Either use at most 5 shot"):
        evaluate_features(x, y, x, y, few_shot_kwargs={"shots": (1, 10)})
    with pytest.raises(ValueError, match="10-shot evaluation needs 10"):
        evaluate_features(x, y, x, y)  # the default shots (1, 5, 10)
    # Without few-shot, or with shots that fit, the probe runs.
    for kwargs in (
        {"protocols": ("linear_probe",)},
        {"few_shot_kwargs": {"shots": (5,)}},
    ):
        with pytest.raises(AssertionError, match="the linear probe ran"):
            evaluate_features(x, y, x, y, **kwargs)


def test_top_k_accuracy():
    logits = np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    labels = np.array([1, 1, 0])
    # Row 2 ties between classes 0 and 1: the lower id wins.
    assert top_k_accuracy(logits, labels, k=1) == pytest.approx(1 / 3)
    assert top_k_accuracy(logits, labels, k=2) == pytest.approx(2 / 3)
    assert top_k_accuracy(logits, labels, k=5) == 1.0


# === kNN ===


def numpy_knn_votes(x_train, y_train, x_test, k, temperature, num_classes):
    """Brute force: full similarity matrix, sort, weighted one-hot votes."""
    a = x_train / np.linalg.norm(x_train, axis=1, keepdims=True)
    b = x_test / np.linalg.norm(x_test, axis=1, keepdims=True)
    similarity = b.astype("float64") @ a.T.astype("float64")
    votes = np.zeros((len(x_test), num_classes))
    for row in range(len(x_test)):
        order = np.argsort(-similarity[row], kind="stable")[:k]
        for index in order:
            votes[row, y_train[index]] += np.exp(
                similarity[row, index] / temperature
            )
    return votes


def test_knn_matches_numpy_reference():
    rng = np.random.default_rng(3)
    x_train = rng.normal(size=(150, 16)).astype("float32")
    y_train = rng.integers(0, 6, 150)
    x_test = rng.normal(size=(37, 16)).astype("float32")
    y_test = rng.integers(0, 6, 37)
    votes = knn_predict(x_train, y_train, x_test, k=20, chunk_size=8)
    expected = numpy_knn_votes(x_train, y_train, x_test, 20, 0.07, 6)
    np.testing.assert_allclose(votes, expected, rtol=2e-4)
    np.testing.assert_array_equal(votes.argmax(1), expected.argmax(1))
    accuracy = knn_accuracy(x_train, y_train, x_test, y_test, chunk_size=8)
    assert accuracy == pytest.approx(np.mean(expected.argmax(1) == y_test))


def test_knn_obvious_answers_and_temperature():
    # Each class lies along its own axis; test points near those axes.
    x_train = np.repeat(np.eye(4, dtype="float32"), 5, axis=0)
    y_train = np.repeat(np.arange(4), 5)
    x_test = np.eye(4, dtype="float32") + 0.1
    assert knn_accuracy(x_train, y_train, x_test, np.arange(4), k=5) == 1.0

    # One very close neighbour of class 0 vs two moderate ones of class 1:
    # the sharp temperature trusts the close one, a flat one counts votes.
    x_train = np.array([[1.0, 0.0], [0.5, 0.866], [0.5, -0.866]], "float32")
    y_train = np.array([0, 1, 1])
    x_test = np.array([[1.0, 0.0]], "float32")
    sharp = knn_predict(x_train, y_train, x_test, k=3, temperature=0.07)
    flat = knn_predict(x_train, y_train, x_test, k=3, temperature=100.0)
    assert sharp.argmax() == 0 and flat.argmax() == 1
    # k larger than the training set is capped.
    assert knn_predict(x_train, y_train, x_test, k=50).shape == (1, 2)


# === Few-shot ===


@pytest.mark.parametrize("count", [12, 60])  # fewer / more rows than dims
def test_ridge_matches_direct_solve(count):
    rng = np.random.default_rng(count)
    x = rng.normal(size=(count, 20))
    y = rng.integers(0, 3, count)
    ridge = RidgeClassifier(x, y, 3)
    # Direct solve of the same whitened, bias-augmented problem.
    z = (x - x.mean(0)) / (x.std(0) + 1e-5)
    z = np.concatenate([z, np.full((count, 1), 100.0)], axis=1)
    targets = 2.0 * np.eye(3)[y] - 1.0
    for l2 in (0.5, 64.0):
        direct = np.linalg.solve(z.T @ z + l2 * np.eye(21), z.T @ targets)
        np.testing.assert_allclose(ridge.weights(l2), direct, atol=1e-8)


def test_few_shot_means_and_determinism():
    x_train, y_train = gaussian_classes(300, num_classes=5, spread=0.7)
    x_test, y_test = gaussian_classes(200, num_classes=5, spread=0.7, seed=1)
    results = few_shot_accuracy(
        x_train, y_train, x_test, y_test, shots=(1, 5), seeds=(0, 1, 2)
    )
    again = few_shot_accuracy(
        x_train, y_train, x_test, y_test, shots=(1, 5), seeds=(0, 1, 2)
    )
    assert results == again
    for shots in (1, 5):
        run = results[shots]
        assert len(run["per_seed"]) == 3 and len(run["l2_reg"]) == 3
        assert run["mean"] == pytest.approx(np.mean(run["per_seed"]))
        assert run["std"] == pytest.approx(np.std(run["per_seed"]))
    assert results[5]["mean"] > 0.9
    assert results[5]["mean"] >= results[1]["mean"]
    # A different seed draws different shots.
    other = few_shot_accuracy(
        x_train, y_train, x_test, y_test, shots=(1,), seeds=(7, 8, 9)
    )
    assert other[1]["per_seed"] != results[1]["per_seed"]


def test_few_shot_fixed_l2_and_labels_with_gaps():
    # Labels 3 and 7 only: classes are compacted internally.
    x_train, y_train = gaussian_classes(40, num_classes=2, spread=0.3)
    x_test, y_test = gaussian_classes(20, num_classes=2, spread=0.3, seed=1)
    y_train, y_test = np.array([3, 7])[y_train], np.array([3, 7])[y_test]
    results = few_shot_accuracy(
        x_train, y_train, x_test, y_test, shots=(2,), l2_reg=1024.0
    )
    assert results[2]["l2_reg"] == [1024.0] * 3
    assert results[2]["mean"] == 1.0
    # Selected on the holdout: every grid value is perfect here, and ties
    # go to the value nearest big_vision's 2**10.
    selected = few_shot_accuracy(x_train, y_train, x_test, y_test, shots=(2,))
    assert selected[2]["l2_reg"] == [1024.0] * 3


def test_few_shot_needs_enough_examples():
    x = np.random.default_rng(0).normal(size=(9, 4)).astype("float32")
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2])
    with pytest.raises(
        ValueError, match=r"class\(es\) have fewer \(class 5: 3"
    ):
        few_shot_accuracy(x, y * 5, x, y * 5, shots=(4,))  # original ids
    with pytest.raises(
        ValueError, match=r"5-shot .*\(class 1: 3, class 2: 1\)"
    ):
        few_shot_accuracy(x, y, x, y, shots=(1, 5))
    with pytest.raises(ValueError, match="test class has training"):
        few_shot_accuracy(x, y, x, np.full(9, 4), shots=(1,))


# === Features ===


def test_extract_features_shapes_and_values(tiny_backbone):
    import tensorflow as tf

    backbone = tiny_backbone
    images = np.random.default_rng(0).normal(size=(5, 32, 32, 3))
    images = images.astype("float32")
    labels = np.array([0, 1, 2, 1, 0])
    expected = keras.ops.convert_to_numpy(backbone(images)["pooled_output"])

    # Arrays, with a short last batch (padded internally).
    features, out_labels = extract_features(
        backbone, images, labels, batch_size=2
    )
    assert features.shape == (5, 32) and features.dtype == np.float32
    assert out_labels.dtype == np.int64
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_allclose(features, expected, atol=1e-4)

    # A tf.data dataset of batches, and a task (its backbone is used).
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    task = SuperClassClassifier(backbone, vocabulary_size=11, compile=False)
    features, out_labels = extract_features(task, dataset, verbose=True)
    np.testing.assert_allclose(features, expected, atol=1e-4)
    np.testing.assert_array_equal(out_labels, labels)

    with pytest.raises(ValueError, match="empty"):
        extract_features(backbone, dataset.take(0))
    with pytest.raises(ValueError, match="4 labels"):
        extract_features(backbone, images, labels[:4])


# === Results ===


def test_evaluate_and_write_results(tmp_path):
    x_train, y_train = gaussian_classes(200, num_classes=6, dim=8)
    x_test, y_test = gaussian_classes(80, num_classes=6, dim=8, seed=1)
    results = evaluate_features(
        x_train,
        y_train,
        x_test,
        y_test,
        linear_probe_kwargs={"epochs": 3, "batch_size": 50},
        knn_kwargs={"k": 5},
        few_shot_kwargs={"shots": (1, 3)},
    )
    assert set(results["few_shot"]["shots"]) == {"1", "3"}
    assert results["knn"]["k"] == 5 and results["num_classes"] == 6
    json_path, markdown_path = write_results(results, tmp_path / "out")
    with open(json_path) as file:
        assert json.load(file) == json.loads(json.dumps(results))
    with open(markdown_path) as file:
        markdown = file.read()
    assert "| Protocol | Setting | Metric | Accuracy (%) |" in markdown
    knn = f"{100 * results['knn']['top1']:.2f}"
    assert f"| kNN | k=5, T=0.07 | top-1 | {knn} |" in markdown
    assert "| 3-shot ridge | 3 seeds | top-1 |" in markdown
    assert markdown.count("top-5") == 2
    assert sorted(os.listdir(tmp_path / "out")) == [
        "results.json",
        "results.md",
    ]
    with pytest.raises(ValueError, match="choose from"):
        evaluate_features(x_train, y_train, x_test, y_test, protocols="svm")


def test_evaluate_encoder_on_arrays(tiny_backbone):
    backbone = tiny_backbone
    rng = np.random.default_rng(0)
    images = rng.normal(size=(12, 32, 32, 3)).astype("float32")
    labels = np.arange(12) % 3
    results = evaluate_encoder(
        backbone,
        (images[:9], labels[:9]),
        (images[9:], labels[9:]),
        protocols=("knn",),
        batch_size=4,
        knn_kwargs={"k": 20},
    )
    assert results["knn"]["k"] == 9  # what voted: every training example
    assert results["encoder"] == "SuperClassBackbone"
    assert results["feature_dim"] == 32 and results["num_test"] == 3
    assert "linear_probe" not in results and "top1" in results["knn"]
    # Three classes: top-5 would be trivially 100%, so it is left out.
    assert results["knn"]["top5"] is None
    assert format_results_table(results).count("| kNN |") == 1


# === CLI ===


def write_image_folder(root, counts, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = {"cat": (220, 40, 40), "dog": (40, 40, 220)}
    for name, colour in colours.items():
        os.makedirs(root / name)
        for i in range(counts):
            noise = rng.integers(-30, 30, size=(40, 48, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255)
            Image.fromarray(pixels.astype("uint8")).save(
                root / name / f"{i}.png"
            )


def test_cli_probe_end_to_end(tiny_backbone, tmp_path, capsys):
    from keras_superclass.cli.main import main

    write_image_folder(tmp_path / "train", 4, seed=0)
    write_image_folder(tmp_path / "test", 2, seed=1)
    preset = tmp_path / "preset"
    tiny_backbone.save_to_preset(str(preset))
    out = tmp_path / "results"
    common = [
        "probe",
        "--preset",
        str(preset),
        "--train",
        str(tmp_path / "train"),
        "--test",
        str(tmp_path / "test"),
        "--batch-size",
        "3",
    ]
    code = main(
        common
        + ["--epochs", "2", "--k", "3", "--shots", "1,2", "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| Linear probe |" in printed and "| 2-shot ridge |" in printed
    with open(out / "results.json") as file:
        results = json.load(file)
    assert results["num_train"] == 8 and results["num_test"] == 4
    assert results.get("class_names", ["cat", "dog"]) == ["cat", "dog"]
    assert results["image_size"] == [32, 32]
    assert set(results["protocols"]) == {"linear_probe", "knn", "few_shot"}
    assert os.path.exists(out / "results.md")

    # User errors end in one clear line and exit status 2.
    code = main(common + ["--protocols", "svm", "--out", str(out)])
    assert code == 2
    assert "choose from linear_probe, knn, few_shot" in capsys.readouterr().err
    common[common.index("--train") + 1] = str(tmp_path / "missing")
    assert main(common + ["--out", str(out)]) == 2
    assert "missing' does not exist" in capsys.readouterr().err


def test_cli_probe_reads_a_labels_table_with_splits(
    tiny_backbone, tmp_path, capsys
):
    from keras_superclass.cli.main import main

    write_image_folder(tmp_path / "images", 5, seed=0)
    rows = ["file,label,split"]
    for name in ("cat", "dog"):
        for i in range(5):
            split = "train" if i < 3 else "test"
            rows.append(f"images/{name}/{i}.png,{name},{split}")
    table = tmp_path / "labels.csv"
    table.write_text("\n".join(rows) + "\n")
    preset = tmp_path / "preset"
    tiny_backbone.save_to_preset(str(preset))
    common = ["probe", "--preset", str(preset), "--train", str(table)]
    common += ["--test", str(table), "--out", str(tmp_path / "results")]
    args = ["--epochs", "2", "--k", "3", "--shots", "1", "--seeds", "0"]
    assert main(common + args) == 0
    capsys.readouterr()
    with open(tmp_path / "results" / "results.json") as file:
        results = json.load(file)
    assert (results["num_train"], results["num_test"]) == (6, 4)
    assert results["class_names"] == ["cat", "dog"]

    # A split that is not in the table, and a file column relative to the
    # wrong folder, are one-line errors.
    assert main(common + args + ["--test-split", "val"]) == 2
    assert "'split' column (['test', 'train'])" in capsys.readouterr().err
    assert main(common + args + ["--test-split", "train"]) == 2
    assert "both split 'train'" in capsys.readouterr().err
    # One table as both sets needs its split column: without it the test
    # images would be the training images.
    text = table.read_text()
    table.write_text(
        "\n".join(line.rsplit(",", 1)[0] for line in text.splitlines())
    )
    assert main(common + args) == 2
    assert "has no 'split' column" in capsys.readouterr().err
    # A row without a label is not a class named ''.
    table.write_text(text.replace("images/dog/4.png,dog", "images/dog/4.png,"))
    assert main(common + args) == 2
    assert "line 11: the 'label' column is empty" in capsys.readouterr().err
    table.write_text(text.replace("images/", ""))
    assert main(common + args) == 2
    assert "relative to the table's folder" in capsys.readouterr().err
