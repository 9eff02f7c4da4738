"""CatLIP: conv stem, task, presets, recipe, and Transfer Init."""

import keras
import numpy as np
import pytest

from keras_superclass.data import synsets
from keras_superclass.layers.token_head import TokenHead
from keras_superclass.losses.multilabel_losses import AsymmetricLoss
from keras_superclass.losses.multilabel_losses import CatLIPLoss
from keras_superclass.models.catlip.catlip_classifier import CatLIPClassifier
from keras_superclass.models.catlip.catlip_presets import backbone_presets
from keras_superclass.models.superclass.conv_stem import ConvStem
from keras_superclass.models.superclass.superclass_backbone import (
    SuperClassBackbone,
)

try:
    synsets.check_wordnet()
    HAVE_WORDNET = True
except RuntimeError:
    HAVE_WORDNET = False

needs_wordnet = pytest.mark.skipif(
    not HAVE_WORDNET,
    reason="WordNet for NLTK is not installed; run scripts/install_wordnet.sh",
)


def _tiny_backbone():
    return SuperClassBackbone(
        image_shape=(32, 32, 3),
        patch_size=16,
        num_layers=1,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        pooling="cls",
        layer_norm_epsilon=1e-6,
        stem="conv",
    )


def test_conv_stem_shapes_and_parameters():
    stem = ConvStem(hidden_dim=192, patch_size=16)
    out = stem(np.zeros((2, 64, 48, 3), dtype="float32"))
    assert tuple(out.shape) == (2, 4, 3, 192)
    assert stem.compute_output_shape((2, 64, 48, 3)) == (2, 4, 3, 192)
    width = 48  # max(32, 192 // 4)
    assert stem.stem_dim == width
    expected = (
        4 * 4 * 3 * width  # conv_0, no bias
        + 2 * width  # norm_0 gamma, beta
        + 2 * 2 * width * width  # conv_1, no bias
        + 2 * width  # norm_1
        + 2 * 2 * width * 192
        + 192  # conv_2 with bias
    )
    # Plus the BN moving mean and variance (non-trainable).
    assert stem.count_params() == expected + 4 * width
    assert len(stem.non_trainable_weights) == 4  # BN moving mean/var
    assert ConvStem(64, 16).stem_dim == 32  # width floor of 32
    assert tuple(ConvStem(64, 8)(np.zeros((1, 32, 32, 3))).shape) == (
        1,
        4,
        4,
        64,
    )
    with pytest.raises(ValueError, match="patch sizes"):
        ConvStem(64, 14)


def test_conv_stem_matches_corenet_torch_stem():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    hidden, width = 64, 32
    stem = ConvStem(hidden, 16)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3))
    x = x.astype("float32")
    stem.build(x.shape)
    # corenet: ConvLayer2d(k4, s4, pad int(3/2)=1) -> BN -> GELU,
    # ConvLayer2d(k2, s2, pad 0) -> BN -> GELU, ConvLayer2d(k2, s2, bias).
    reference = nn.Sequential(
        nn.Conv2d(3, width, 4, stride=4, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.GELU(),
        nn.Conv2d(width, width, 2, stride=2, padding=0, bias=False),
        nn.BatchNorm2d(width),
        nn.GELU(),
        nn.Conv2d(width, hidden, 2, stride=2, padding=0, bias=True),
    ).eval()
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for conv, torch_conv in zip(stem.convs, reference[0::3]):
            kernel = keras.ops.convert_to_numpy(conv.kernel)
            torch_conv.weight.copy_(
                torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
            )
            if conv.use_bias:
                bias = rng.standard_normal(hidden).astype("float32")
                conv.bias.assign(bias)
                torch_conv.bias.copy_(torch.from_numpy(bias))
        for norm, torch_norm in zip(stem.norms, (reference[1], reference[4])):
            values = [
                rng.standard_normal(width).astype("float32") for _ in range(3)
            ]
            values.append(rng.uniform(0.5, 2.0, width).astype("float32"))
            norm.set_weights(values)  # gamma, beta, moving mean, variance
            for name, value in zip(
                ("weight", "bias", "running_mean", "running_var"), values
            ):
                getattr(torch_norm, name).copy_(torch.from_numpy(value))
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    expected = expected.numpy().transpose(0, 2, 3, 1)
    got = keras.ops.convert_to_numpy(stem(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_presets_match_the_reference_architectures():
    expected = {
        "catlip_vit_b16": (768, 12),
        "catlip_vit_l16": (1024, 24),
        "catlip_vit_h16": (1280, 32),
        "catlip_vit_ti16": (192, 12),
    }
    assert set(backbone_presets) == set(expected)
    for name, (width, layers) in expected.items():
        config = backbone_presets[name]["backbone"]
        assert (config["hidden_dim"], config["num_layers"]) == (width, layers)
        assert config["pooling"] == "cls"
        assert config["stem"] == "conv"
        assert config["layer_norm_epsilon"] == 1e-6
        assert backbone_presets[name]["task"]["vocabulary_size"] == 24320
    with pytest.raises(ValueError, match="architecture presets are"):
        CatLIPClassifier.from_preset("catlip_vit_x99")


def test_default_compile_is_the_catlip_recipe():
    model = CatLIPClassifier(_tiny_backbone(), vocabulary_size=16)
    model.compile(learning_rate=1e-3, warmup_steps=10, total_steps=110)
    assert isinstance(model.loss, CatLIPLoss)
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.AdamW)
    assert (opt.beta_1, opt.beta_2, opt.epsilon) == (0.9, 0.999, 1e-8)
    assert opt.weight_decay == pytest.approx(0.2)
    assert opt.global_clipnorm == 1.0 and opt.clipnorm is None
    assert opt.use_ema and opt.ema_momentum == pytest.approx(0.9995)
    schedule = opt._learning_rate
    rates = [float(schedule(step)) for step in (0, 10, 110, 500)]
    assert rates[0] == pytest.approx(0.0)
    assert rates[1] == pytest.approx(1e-3)
    assert rates[2] == pytest.approx(1e-5)  # 1/100 of the peak
    assert rates[3] == pytest.approx(1e-5)
    # No weight decay on 1-D variables (biases, norms, class token).
    decayed = [v for v in model.trainable_variables if opt._use_weight_decay(v)]
    assert decayed and all(len(v.shape) >= 2 for v in decayed)
    model.compile(loss="asl", loss_kwargs={"gamma_pos": 0.0})
    assert isinstance(model.loss, AsymmetricLoss)
    assert model.loss.gamma_pos == 0.0
    assert model.loss.vocabulary_size == 16


def test_tiny_catlip_learns_and_round_trips_as_preset(tmp_path):
    model = CatLIPClassifier(_tiny_backbone(), vocabulary_size=16)
    # The recipe (EMA, clipping, wd) with a short, warm-up-free schedule.
    model.compile(learning_rate=3e-3, warmup_steps=0, total_steps=100)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 32, 32, 3)).astype("float32")
    labels = np.full((8, 4), -1, dtype="int32")  # padded synset ids
    for i in range(8):
        labels[i, : 1 + i % 3] = rng.choice(16, 1 + i % 3, replace=False)
    history = model.fit(images, labels, batch_size=8, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0]

    model.save_to_preset(str(tmp_path / "preset"))
    restored = CatLIPClassifier.from_preset(str(tmp_path / "preset"))
    assert isinstance(restored, CatLIPClassifier)
    assert restored.vocabulary_size == 16
    assert restored.backbone.stem == "conv"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(images[:2], training=False)),
        keras.ops.convert_to_numpy(model(images[:2], training=False)),
        atol=1e-5,
    )


def test_from_preset_name_builds_the_architecture():
    model = CatLIPClassifier.from_preset(
        "catlip_vit_ti16",
        vocabulary_size=8,
        image_shape=(32, 32, 3),
        num_layers=1,
        compile=False,
    )
    assert model.backbone.hidden_dim == 192
    assert model.backbone.pooling == "cls"
    assert model.backbone.layer_norm_epsilon == 1e-6
    out = model(np.zeros((1, 32, 32, 3), "float32"), training=False)
    assert tuple(out.shape) == (1, 8)


# ---- Transfer Init ----


def _head_and_vocab():
    words = ["dog", "cat", "car", "image", "puppy", "house"]
    entries = [{"key": synsets.word_to_synset(w)[0], "lemma": w} for w in words]
    vocab = synsets.SynsetVocabulary(entries)
    head = TokenHead(len(words))
    head.build((None, 4))
    kernel = np.arange(4 * len(words), dtype="float32").reshape(4, -1)
    bias = np.arange(len(words), dtype="float32") * 10
    head.classifier.set_weights([kernel, bias])
    return head, vocab, kernel, bias


@needs_wordnet
def test_match_classes_to_synsets():
    from keras_superclass.evaluation.transfer_init import (
        match_classes_to_synsets,
    )

    _, vocab, _, _ = _head_and_vocab()
    report = match_classes_to_synsets(
        ["Dogs", "n02958343", "domestic cat", "tench, Tinca tinca"],
        vocab,
        threshold=0.3,
    )
    assert [r["method"] for r in report] == ["exact", "exact", "path", "none"]
    assert report[0]["matches"][0]["lemma"] == "dog"
    assert report[1]["synset"] == "car.n.01"
    # domestic_cat.n.01 -> cat.n.01 (parent, 1/2) and dog.n.01 (1/3).
    assert [(m["lemma"], m["similarity"]) for m in report[2]["matches"]] == [
        ("cat", 0.5),
        ("dog", pytest.approx(1 / 3)),
    ]
    strict = match_classes_to_synsets(["domestic cat"], vocab, threshold=0.5)
    assert [m["lemma"] for m in strict[0]["matches"]] == ["cat"]
    with pytest.raises(ValueError, match="threshold"):
        match_classes_to_synsets(["dog"], vocab, threshold=0)


@needs_wordnet
def test_transfer_init_classifier_copies_matched_rows():
    from keras_superclass.evaluation.transfer_init import (
        transfer_init_classifier,
    )

    head, vocab, kernel, bias = _head_and_vocab()
    classes = ["car", "domestic cat", "tench"]
    new_kernel, new_bias, report = transfer_init_classifier(
        head, classes, vocab, threshold=0.3, seed=0
    )
    assert new_kernel.shape == (4, 3) and new_bias.shape == (3,)
    np.testing.assert_array_equal(new_kernel[:, 0], kernel[:, 2])  # car
    assert new_bias[0] == bias[2]
    # Several matches (cat, dog): the mean of their rows.
    np.testing.assert_allclose(new_kernel[:, 1], kernel[:, [1, 0]].mean(1))
    assert new_bias[1] == pytest.approx(bias[[0, 1]].mean())
    # No match: random init, zero bias, reproducible with the seed.
    assert report[2]["method"] == "none" and new_bias[2] == 0.0
    assert not np.isin(new_kernel[:, 2], kernel).any()
    again = transfer_init_classifier(head, classes, vocab, 0.3, seed=0)
    np.testing.assert_array_equal(again[0], new_kernel)
    with pytest.raises(ValueError, match="vocabulary has"):
        transfer_init_classifier(
            head, classes, synsets.SynsetVocabulary(vocab.keys[:3])
        )


def test_token_head_classifier_inputs_feed_its_classifier():
    # With a classifier holding the head's own weights, Dense on the head's
    # classifier_inputs reproduces the head's logits (MLP blocks included).
    head = TokenHead(6, num_mlp_layers=1)
    features = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    logits = keras.ops.convert_to_numpy(head(features))
    inputs = keras.ops.convert_to_numpy(head.classifier_inputs(features))
    kernel, bias = (
        keras.ops.convert_to_numpy(w) for w in head.classifier.weights
    )
    np.testing.assert_allclose(inputs @ kernel + bias, logits, atol=1e-5)
