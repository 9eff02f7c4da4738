"""Image-text model: contrastive losses, OpenCLIP parity, LiT locking."""

import math
import os
import sys

import keras
import numpy as np
import pytest

# As in test_convert: open_clip pulls in Triton, which crashes once
# TensorFlow is loaded; these CPU tests need none of it.
if "triton" not in sys.modules:
    sys.modules["triton"] = None

torch = pytest.importorskip("torch", reason="the reference side is PyTorch")
open_clip_model = pytest.importorskip(
    "open_clip.model", reason="parity needs open_clip_torch"
)
open_clip_loss = pytest.importorskip("open_clip.loss")

from keras_superclass.losses import CLIPLoss  # noqa: E402
from keras_superclass.losses import SigLIPLoss  # noqa: E402
from keras_superclass.losses import clip_loss  # noqa: E402
from keras_superclass.models import ImageTextModel  # noqa: E402
from keras_superclass.models import SuperClassBackbone  # noqa: E402

IMAGE, PATCH, CONTEXT, VOCAB = 32, 8, 12, 100


def _unit_rows(rng, n, d):
    x = rng.standard_normal((n, d)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _numpy_clip(image, text, scale, bias=0.0):
    logits = scale * image @ text.T + bias
    diagonal = np.arange(len(image))
    per_image = -_log_softmax(logits)[diagonal, diagonal].mean()
    per_text = -_log_softmax(logits.T)[diagonal, diagonal].mean()
    return (per_image + per_text) / 2


def _numpy_siglip(image, text, scale, bias):
    logits = scale * image @ text.T + bias
    signs = 2 * np.eye(len(image)) - 1
    # -log(sigmoid(z)) = log(1 + exp(-z))
    return np.logaddexp(0, -signs * logits).sum() / len(image)


def test_contrastive_losses_equal_numpy_and_open_clip():
    rng = np.random.default_rng(0)
    image, text = _unit_rows(rng, 6, 8), _unit_rows(rng, 6, 8)
    scale, bias = 7.3, -2.5
    outputs = {
        "image_features": image,
        "text_features": text,
        "logit_scale": np.full((6,), scale, "float32"),
    }
    ours = float(CLIPLoss()(None, outputs))
    expected = _numpy_clip(image, text, scale)
    reference = open_clip_loss.ClipLoss()(
        torch.from_numpy(image), torch.from_numpy(text), torch.tensor(scale)
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    np.testing.assert_allclose(ours, float(reference), rtol=1e-5)
    with_bias = float(clip_loss(image, text, scale, bias))
    np.testing.assert_allclose(
        with_bias, _numpy_clip(image, text, scale, bias), rtol=1e-5
    )

    outputs["logit_bias"] = np.full((6,), bias, "float32")
    ours = float(SigLIPLoss()(None, outputs))
    reference = open_clip_loss.SigLipLoss()(
        torch.from_numpy(image),
        torch.from_numpy(text),
        torch.tensor(scale),
        torch.tensor(bias),
    )
    np.testing.assert_allclose(
        ours, _numpy_siglip(image, text, scale, bias), rtol=1e-5
    )
    np.testing.assert_allclose(ours, float(reference), rtol=1e-5)
    with pytest.raises(ValueError, match="'image_features'"):
        CLIPLoss()(None, image)


def _reference_clip():
    """A tiny random OpenCLIP CLIP (OpenAI layout: QuickGELU, class token).

    Biases and LayerNorms are perturbed so every layout is really tested.
    """
    torch.manual_seed(0)
    model = open_clip_model.CLIP(
        embed_dim=16,
        vision_cfg=open_clip_model.CLIPVisionCfg(
            layers=2, width=64, head_width=32, patch_size=PATCH, image_size=32
        ),
        text_cfg=open_clip_model.CLIPTextCfg(
            context_length=CONTEXT,
            vocab_size=VOCAB,
            width=32,
            heads=2,
            layers=2,
        ),
        quick_gelu=True,
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(3.0)
    return model.eval()


def _prompts(rng, n):
    """Padded CLIP-style sequences: SOT, words, EOT (the largest id), 0s."""
    ids = np.zeros((n, CONTEXT), "int32")
    for row, length in enumerate(rng.integers(3, CONTEXT + 1, n)):
        ids[row, 0] = VOCAB - 2
        ids[row, 1 : length - 1] = rng.integers(1, VOCAB - 2, length - 2)
        ids[row, length - 1] = VOCAB - 1
    return ids


def test_openclip_checkpoint_converts_to_an_equal_preset(tmp_path):
    from keras_superclass.cli.main import main

    reference = _reference_clip()
    checkpoint = os.path.join(tmp_path, "clip.pt")
    torch.save({"state_dict": reference.state_dict()}, checkpoint)
    out = os.path.join(tmp_path, "preset")
    flags = ["--image-text", "--quick-gelu", "--image-pooling", "cls"]
    flags += ["--num-heads", "2", "--text-num-heads", "2"]
    args = ["convert", "--checkpoint", checkpoint, "--out", out, *flags]
    assert main(args) == 0
    assert main(args) == 2  # an existing preset is not overwritten
    model = ImageTextModel.from_preset(out)  # config + weights round trip

    rng = np.random.default_rng(0)
    images = rng.standard_normal((6, IMAGE, IMAGE, 3)).astype("float32")
    prompts = _prompts(rng, 5)
    with torch.no_grad():
        image_features, text_features, scale = reference(
            torch.from_numpy(images.transpose(0, 3, 1, 2)),
            torch.from_numpy(prompts.astype("int64")),
        )
        expected = (scale * image_features @ text_features.T).numpy()
    logits = model.logits(images, prompts)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
    # Zero-shot: each image's best prompt is the same.
    np.testing.assert_array_equal(logits.argmax(1), expected.argmax(1))
    scale = model.logit_scale_layer.logit_scale
    assert float(keras.ops.convert_to_numpy(scale)) == pytest.approx(3.0)


def test_lock_image_tower_and_one_lit_step():
    # The reference's sizes: on JAX the weight initialisers compiled for
    # the parity test are reused (each new shape compiles).
    backbone = SuperClassBackbone(
        image_shape=(IMAGE, IMAGE, 3),
        patch_size=PATCH,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        mlp_dim=256,
    )
    model = ImageTextModel(
        backbone,
        text_encoder={
            "vocabulary_size": VOCAB,
            "sequence_length": CONTEXT,
            "hidden_dim": 32,
            "num_layers": 2,
            "num_heads": 2,
        },
        embed_dim=16,
        logit_scale_init=math.log(100) - 1e-4,
        compile=False,
    )

    # Keras's functional models drop unknown keywords; ours name them,
    # as a misspelt size would otherwise build the default-size tower.
    with pytest.raises(TypeError, match=r"\['hidden_size'\].*hidden_dim"):
        ImageTextModel(backbone, text_encoder={"hidden_size": 32})
    with pytest.raises(TypeError, match="text_encoder must be"):
        ImageTextModel(backbone, text_encoder=128)
    with pytest.raises(TypeError, match=r"\['embed_size'\]"):
        ImageTextModel(backbone, embed_size=16)
    with pytest.raises(TypeError, match=r"\['hidden_size'\]"):
        SuperClassBackbone(image_shape=(IMAGE, IMAGE, 3), hidden_size=64)

    def trainable():  # Variables by identity: both towers have block_0.
        return {id(v) for v in model.trainable_variables}

    image = {id(v) for v in backbone.weights}
    everything = trainable()
    model.lock_image_tower(2)  # last block + ln_post + projection
    tail = backbone.transformer_blocks[-1].weights + backbone.ln_post.weights
    assert trainable() & image == {id(v) for v in tail}
    assert id(model.image_projection.kernel) in trainable()
    model.lock_image_tower(0)
    assert id(model.image_projection.kernel) not in trainable()
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        model.lock_image_tower(5)
    model.lock_image_tower(1)  # LiT: only the projection
    assert trainable() == everything - image

    before = [keras.ops.convert_to_numpy(v) for v in backbone.weights]
    projection = keras.ops.convert_to_numpy(model.image_projection.kernel)
    text_before = keras.ops.convert_to_numpy(model.text_projection.kernel)
    model.compile(learning_rate=1e-2, warmup_steps=0)
    rng = np.random.default_rng(1)
    batch = {
        "images": rng.standard_normal((4, IMAGE, IMAGE, 3)).astype("float32"),
        "token_ids": _prompts(rng, 4),
    }
    loss = model.train_on_batch(batch)
    assert np.isfinite(loss)
    for value, variable in zip(before, backbone.weights):
        np.testing.assert_array_equal(
            value, keras.ops.convert_to_numpy(variable)
        )
    for old, new in (
        (projection, model.image_projection.kernel),
        (text_before, model.text_projection.kernel),
    ):
        assert np.abs(old - keras.ops.convert_to_numpy(new)).max() > 0
    # The logit scale stays clamped at log(100) (OpenCLIP's clamp).
    scale = float(
        keras.ops.convert_to_numpy(model.logit_scale_layer.logit_scale)
    )
    assert scale <= math.log(100) + 1e-6
