"""Reference-checkpoint conversion: parity with real OpenCLIP modules."""

import gc
import os
import sys

import keras
import numpy as np
import pytest

# open_clip imports torchvision -> torch._dynamo -> Triton, whose native
# module crashes the process once TensorFlow is loaded (every backend loads
# it for tf.data). These CPU tests need no Triton: make it unimportable.
if "triton" not in sys.modules:
    sys.modules["triton"] = None

torch = pytest.importorskip("torch", reason="the reference side is PyTorch")
open_clip_transformer = pytest.importorskip(
    "open_clip.transformer", reason="parity needs open_clip_torch"
)

from keras_superclass.convert import load_reference_weights  # noqa: E402
from keras_superclass.models.superclass.superclass_backbone import (  # noqa: E402
    SuperClassBackbone,
)
from keras_superclass.models.superclass.superclass_classifier import (  # noqa: E402
    SuperClassClassifier,
)

IMAGE, PATCH, WIDTH, LAYERS, HEADS, VOCAB = 32, 8, 64, 2, 2, 50


def reference_tower(image=IMAGE, keep_proj=False):
    """OpenCLIP's ViT as SuperClass builds it (`embed_dim=0`, avg pool).

    x-cls/superclass passes `embed_dim=0`, which leaves `proj = None` in
    its OpenCLIP fork; current OpenCLIP always makes a `proj`, so it is
    dropped here the same way.
    """
    torch.manual_seed(0)
    tower = open_clip_transformer.VisionTransformer(
        image_size=image,
        patch_size=PATCH,
        width=WIDTH,
        layers=LAYERS,
        heads=HEADS,
        mlp_ratio=4.0,
        output_dim=WIDTH,
        pool_type="avg",
    )
    if not keep_proj:
        tower.proj = None
    # Non-trivial LayerNorm and bias values, so layouts are really tested.
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if name.endswith(("bias", "ln_pre.weight", "ln_post.weight")):
                p.add_(0.1 * torch.randn_like(p))
            if ".ln_" in name and name.endswith("weight"):
                p.add_(0.1 * torch.randn_like(p))
    return tower.eval()


class ReferenceClassifier(torch.nn.Module):
    """The x-cls/superclass `Classifier` layout: tower, head, IDF buffers."""

    def __init__(self, vocab=VOCAB):
        super().__init__()
        self.visual = reference_tower()
        self.text_decoder = torch.nn.Module()
        self.text_decoder.ln_mlp = torch.nn.LayerNorm(WIDTH)
        self.text_decoder.text_projection = torch.nn.Linear(WIDTH, vocab)
        with torch.no_grad():
            self.text_decoder.ln_mlp.weight.add_(0.1 * torch.randn(WIDTH))
            self.text_decoder.ln_mlp.bias.add_(0.1 * torch.randn(WIDTH))
        self.register_buffer(
            "cap_fq", torch.rand(1, vocab, dtype=torch.float64)
        )
        self.register_buffer(
            "num_samples", torch.full((1, 1), 7.0, dtype=torch.float64)
        )

    def forward(self, images):
        pooled = self.visual(images)
        decoder = self.text_decoder
        return pooled, decoder.text_projection(decoder.ln_mlp(pooled))


def keras_model(vocab=VOCAB, image=IMAGE, classifier=True):
    backbone = SuperClassBackbone(
        image_shape=(image, image, 3),
        patch_size=PATCH,
        num_layers=LAYERS,
        num_heads=HEADS,
        hidden_dim=WIDTH,
        mlp_dim=4 * WIDTH,
    )
    if not classifier:
        return backbone
    return SuperClassClassifier(backbone, vocabulary_size=vocab, compile=False)


def images(image=IMAGE, batch=2):
    rng = np.random.default_rng(0)
    return rng.standard_normal((batch, image, image, 3)).astype("float32")


def torch_outputs(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x.transpose(0, 3, 1, 2)))


def keras_pooled(model, x):
    backbone = getattr(model, "backbone", model)
    out = backbone(x, training=False)["pooled_output"]
    return keras.ops.convert_to_numpy(out)


def test_superclass_checkpoint_parity():
    reference = ReferenceClassifier().eval()
    model = keras_model()
    report = load_reference_weights(model, reference.state_dict())
    assert not report.missing and not report.unexpected
    x = images()
    pooled, logits = torch_outputs(reference, x)
    np.testing.assert_allclose(
        keras_pooled(model, x), pooled.numpy(), atol=1e-4, rtol=1e-4
    )
    ours = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(ours, logits.numpy(), atol=1e-4, rtol=1e-4)
    stats = model.idf_statistics
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(stats.cap_fq),
        reference.cap_fq.numpy()[0],
        rtol=1e-6,
    )
    assert float(keras.ops.convert_to_numpy(stats.num_samples)) == 7.0


def test_openclip_tower_and_ddp_prefix():
    tower = reference_tower()
    state = {f"module.{k}": v for k, v in tower.state_dict().items()}
    backbone = keras_model(classifier=False)
    load_reference_weights(backbone, state)
    x = images()
    expected = torch_outputs(tower, x).numpy()
    np.testing.assert_allclose(
        keras_pooled(backbone, x), expected, atol=1e-4, rtol=1e-4
    )


def test_clip_state_dict_ignores_text_tower_and_proj():
    tower = reference_tower(keep_proj=True)
    state = {f"visual.{k}": v for k, v in tower.state_dict().items()}
    state["token_embedding.weight"] = torch.zeros(10, 8)
    state["positional_embedding"] = torch.zeros(77, 8)  # the text one
    state["logit_scale"] = torch.tensor(1.0)
    model = keras_model()
    with pytest.raises(ValueError, match="no SuperClass head"):
        load_reference_weights(model, state)
    report = load_reference_weights(model, state, strict=False)
    assert "visual.text_projection.weight" not in report.loaded
    assert "text_decoder.text_projection.weight" in report.missing
    assert "proj" in report.ignored
    assert any("projection" in note for note in report.notes)
    assert "token_embedding.weight" in report.ignored
    tower.proj = None
    x = images()
    np.testing.assert_allclose(
        keras_pooled(model, x),
        torch_outputs(tower, x).numpy(),
        atol=1e-4,
        rtol=1e-4,
    )


def test_pt_path_with_state_dict_wrapper(tmp_path):
    reference = ReferenceClassifier().eval()
    path = os.path.join(tmp_path, "checkpoint.pt")
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, path)
    model = keras_model()
    load_reference_weights(model, path)
    x = images()
    _, logits = torch_outputs(reference, x)
    ours = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(ours, logits.numpy(), atol=1e-4, rtol=1e-4)


def test_npz_and_safetensors_paths(tmp_path):
    from safetensors.numpy import save_file

    tower = reference_tower()
    arrays = {k: v.numpy() for k, v in tower.state_dict().items()}
    x = images()
    expected = torch_outputs(tower, x).numpy()
    npz = os.path.join(tmp_path, "tower.npz")
    np.savez(npz, **arrays)
    st = os.path.join(tmp_path, "tower.safetensors")
    save_file(arrays, st)
    for path in (npz, st):
        backbone = keras_model(classifier=False)
        load_reference_weights(backbone, path)
        np.testing.assert_allclose(
            keras_pooled(backbone, x), expected, atol=1e-4, rtol=1e-4
        )


def test_position_table_resized_for_other_grid():
    tower = reference_tower(image=IMAGE)  # 4x4 grid
    model = keras_model(image=2 * IMAGE, classifier=False)  # 8x8 grid
    report = load_reference_weights(model, tower.state_dict())
    assert any("4x4 grid to 8x8" in note for note in report.notes)
    table = keras.ops.convert_to_numpy(
        model.patch_embedding.positional_embedding
    )
    source = tower.positional_embedding.detach().numpy()
    np.testing.assert_allclose(table[0], source[0])  # class position kept
    # Bilinear upsampling (half-pixel centres) keeps the mean of each
    # channel up to the border effects; the corners are copied exactly.
    grid = table[1:].reshape(8, 8, WIDTH)
    src = source[1:].reshape(4, 4, WIDTH)
    np.testing.assert_allclose(grid[0, 0], src[0, 0], atol=1e-6)
    np.testing.assert_allclose(grid[-1, -1], src[-1, -1], atol=1e-6)


def test_errors_are_clear():
    reference = ReferenceClassifier().eval()
    state = reference.state_dict()
    # Wrong vocabulary.
    with pytest.raises(ValueError, match="vocabulary_size=50"):
        load_reference_weights(keras_model(vocab=40), state)
    # Wrong model size.
    wide = SuperClassClassifier(
        SuperClassBackbone(
            image_shape=(IMAGE, IMAGE, 3),
            patch_size=PATCH,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=2 * WIDTH,
            mlp_dim=8 * WIDTH,
        ),
        vocabulary_size=VOCAB,
        compile=False,
    )
    with pytest.raises(ValueError, match=r"conv1\.weight.*width 64"):
        load_reference_weights(wide, state)
    # Missing keys.
    partial = {k: v for k, v in state.items() if "resblocks.1." not in k}
    model = keras_model()
    before = keras.ops.convert_to_numpy(model.backbone.ln_pre.gamma)
    with pytest.raises(ValueError, match=r"missing.*resblocks\.1\.ln_1"):
        load_reference_weights(model, partial)
    # A failed load writes nothing.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.backbone.ln_pre.gamma), before
    )
    # Unexpected keys.
    extra = dict(state)
    extra["visual.attn_pool.query"] = torch.zeros(3)
    with pytest.raises(ValueError, match="attn_pool"):
        load_reference_weights(model, extra)
    with pytest.raises(FileNotFoundError):
        load_reference_weights(model, "no/such/file.pt")


def test_cli_convert_writes_loadable_preset(tmp_path):
    from keras_superclass.cli.main import main

    reference = ReferenceClassifier().eval()
    path = os.path.join(tmp_path, "ckpt.pt")
    torch.save(reference.state_dict(), path)
    out = os.path.join(tmp_path, "preset")
    code = main(
        [
            "convert",
            "--checkpoint",
            path,
            "--preset",
            "superclass_vit_ti16",
            "--image-size",
            str(IMAGE),
            "--patch-size",
            str(PATCH),
            "--num-layers",
            str(LAYERS),
            "--num-heads",
            str(HEADS),
            "--hidden-dim",
            str(WIDTH),
            "--out",
            out,
        ]
    )
    assert code == 0
    loaded = SuperClassClassifier.from_preset(out)
    assert loaded.vocabulary_size == VOCAB  # taken from the checkpoint
    x = images()
    _, logits = torch_outputs(reference, x)
    ours = keras.ops.convert_to_numpy(loaded(x, training=False))
    np.testing.assert_allclose(ours, logits.numpy(), atol=1e-4, rtol=1e-4)
    # An existing output directory is not overwritten.
    assert main(["convert", "--checkpoint", path, "--out", out]) == 2


def test_cli_convert_damaged_files_give_one_clear_line(tmp_path, capsys):
    from keras_superclass.cli.main import main

    garbage = np.random.default_rng(0).bytes(300)
    arrays = {"a": np.zeros(3, "float32")}
    np.savez(tmp_path / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    np.savez(tmp_path / "good.npz", **arrays)
    cut = (tmp_path / "good.npz").read_bytes()
    from safetensors.numpy import save_file

    save_file(arrays, str(tmp_path / "good.safetensors"))
    whole = (tmp_path / "good.safetensors").read_bytes()
    cases = {
        "garbage.safetensors": (garbage, "not a valid .safetensors file"),
        "cut.safetensors": (whole[:-4], "not a valid .safetensors file"),
        "garbage.npz": (garbage, "not a .npz archive"),
        "cut.npz": (cut[: len(cut) // 2], "not a .npz archive"),
        "objects.npz": (None, "arrays of Python objects"),
    }
    for name, (data, expected) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        out = str(tmp_path / "out")
        assert (
            main(
                ["convert", "--checkpoint", str(tmp_path / name)]
                + ["--out", out]
            )
            == 2
        )
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1, error
        assert name in error and expected in error, error
        if name.startswith("garbage"):
            assert "pickled" not in error
        assert not os.path.exists(out)


# Vision tower / head / total with a 49,408-way head (REFERENCE 1).
PARAMETER_COUNTS = {
    "superclass_vit_s16": (21_666_048, 19_022_848, 40_688_896),
    "superclass_vit_b16": (85_799_424, 37_996_288, 123_795_712),
    "superclass_vit_l16": (303_302_656, 50_645_248, 353_947_904),
    "superclass_vit_l14": (303_179_776, 50_645_248, 353_825_024),
}


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.mark.parametrize("preset", sorted(PARAMETER_COUNTS))
def test_parameter_counts_match_reference(preset):
    tower, head, total = PARAMETER_COUNTS[preset]
    # Variables made in a stateless scope defer their initialisation; left
    # uninitialised on exit, the L models count their weights without
    # allocating ~1.4 GB (clear_session drops them).
    with keras.StatelessScope(initialize_variables=False):
        model = SuperClassClassifier.from_preset(preset, compile=False)
    try:
        assert model.vocabulary_size == 49408
        assert _count(model.backbone.trainable_weights) == tower
        assert _count(model.token_head.trainable_weights) == head
        assert _count(model.trainable_weights) == total
    finally:
        del model
        keras.backend.clear_session()
        gc.collect()


class _WritesAFile:
    """A pickle that, if unpickled, creates `path`: what a hostile
    checkpoint would do with any other callable."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoints_are_read_weights_only(tmp_path):
    from keras_superclass.convert.files import read_state_dict

    marker = tmp_path / "unpickled"
    hostile = tmp_path / "hostile.pt"
    torch.save({"w": torch.zeros(2), "x": _WritesAFile(str(marker))}, hostile)
    with pytest.raises(ValueError, match="Unsupported global") as error:
        read_state_dict(hostile)
    assert not marker.exists()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    for path in (hostile, garbage):
        with pytest.raises(ValueError, match="weights-only") as error:
            read_state_dict(path)
        # torch's own advice (load with weights_only=False) is not passed on.
        assert "weights_only" not in str(error.value)
        assert "state_dict()" in str(error.value)
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    np.testing.assert_array_equal(
        read_state_dict(tmp_path / "plain.pt")["w"].numpy(), np.ones(2)
    )
