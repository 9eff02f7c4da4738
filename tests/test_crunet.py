"""CRU-Net: parameter counts, real weight sharing, a PyTorch reference
forward, save/load, and SuperClass pretraining with a CRU-Net encoder."""

import os

import h5py
import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from keras_superclass.models import SuperClassClassifier
from keras_superclass.models.crunet import CollectiveResidualUnit
from keras_superclass.models.crunet import CRUNetBackbone
from keras_superclass.models.crunet import CRUNetImageClassifier
from keras_superclass.models.crunet import PreActResNeXtUnit
from keras_superclass.models.crunet import SharedCRUFactors

# REFERENCE section 3 (trainable parameters).
COUNTS = {
    "crunet56": dict(
        with_head=25_609_384, backbone=23_560_384, unshared_extra=3_305_600
    ),
    "crunet116": dict(
        with_head=43_656_136, backbone=41_607_136, unshared_extra=11_825_440
    ),
}
# Sets of shared (A, G) factors: 56 one at 14x14; 116 one at 28x28 + 3.
FACTOR_SETS = {"crunet56": 1, "crunet116": 4, "crunet_tiny": 3}


def trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def factor_sets(backbone):
    """Distinct SharedCRUFactors used by the backbone's units."""
    sets = {}
    for layer in backbone.layers:
        if isinstance(layer, CollectiveResidualUnit):
            sets[id(layer.factors)] = layer.factors
    return list(sets.values())


def randomize_batch_norms(model, seed=0):
    """Random BN statistics, so inference-mode checks see them."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 1.5, n).astype("float32")
            )


@pytest.fixture(scope="module")
def tiny_backbone():
    # Built once: on JAX every new weight shape costs a compilation.
    keras.utils.set_random_seed(7)
    backbone = CRUNetBackbone.from_preset("crunet_tiny")
    randomize_batch_norms(backbone)
    return backbone


# --- Architecture ---------------------------------------------------------


@pytest.mark.parametrize("preset", ["crunet56", "crunet116"])
def test_parameter_counts_and_stage_shapes(preset):
    expected = COUNTS[preset]
    # Variables get their shapes but no random values: counting and
    # symbolic shapes need no initialisation.
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = CRUNetImageClassifier.from_preset(
                preset, num_classes=1000, compile=False
            )
            unshared = CRUNetBackbone.from_preset(preset, share=False)
        backbone = model.backbone
        assert trainable_count(model) == expected["with_head"]
        assert trainable_count(backbone) == expected["backbone"]
        extra = trainable_count(unshared) - trainable_count(backbone)
        assert extra == expected["unshared_extra"]
        assert len(factor_sets(backbone)) == FACTOR_SETS[preset]
        assert backbone.output_dim == 2048
        shapes = {k: tuple(v.shape) for k, v in backbone.output.items()}
        assert shapes == {
            "pooled_output": (None, 2048),
            "stage1": (None, 56, 56, 256),
            "stage2": (None, 28, 28, 512),
            "stage3": (None, 14, 14, 1024),
            "stage4": (None, 7, 7, 2048),
        }
        assert tuple(model.output.shape) == (None, 1000)
    finally:
        # Drop the never-initialised variables from Keras' global registry.
        keras.utils.clear_session()


def test_share_false_gives_each_unit_its_own_factors():
    try:
        with keras.StatelessScope(initialize_variables=False):
            backbone = CRUNetBackbone.from_preset("crunet_tiny", share=False)
        units = [
            layer
            for layer in backbone.layers
            if isinstance(layer, CollectiveResidualUnit)
        ]
        assert len(factor_sets(backbone)) == len(units) == 6
    finally:
        keras.utils.clear_session()


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="crunet116.*crunet56.*crunet_tiny"):
        CRUNetBackbone.from_preset("crunet_huge")
    with pytest.raises(ValueError, match="architecture presets are"):
        CRUNetImageClassifier.from_preset("crunet_huge", num_classes=3)


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="one length"):
        CRUNetBackbone(stage_units=[1, 1], stage_filters=[8, 16, 32])
    with pytest.raises(ValueError, match="divisible by the cardinality"):
        CRUNetBackbone.from_preset("crunet_tiny", cardinality=5)
    with pytest.raises(ValueError, match="project=True"):
        CollectiveResidualUnit(16, 8, strides=2)
    with pytest.raises(ValueError, match="needs 16 -> 8"):
        CollectiveResidualUnit(16, 8, factors=SharedCRUFactors(16, 4))
    with pytest.raises(ValueError, match="Pass `project=True`"):
        PreActResNeXtUnit(16, 8, cardinality=4)(keras.ops.zeros((1, 4, 4, 8)))


# --- Numerics against an independent PyTorch forward ----------------------


def _t(variable):
    return torch.from_numpy(np.array(keras.ops.convert_to_numpy(variable)))


def _torch_conv(x, kernel, stride=1, padding=0, groups=1):
    # Keras (kh, kw, cin / groups, cout) -> PyTorch (cout, cin / g, kh, kw).
    return F.conv2d(
        x,
        _t(kernel).permute(3, 2, 0, 1),
        stride=stride,
        padding=padding,
        groups=groups,
    )


def _torch_bn_relu(x, layer, relu=True):
    y = F.batch_norm(
        x,
        _t(layer.moving_mean),
        _t(layer.moving_variance),
        _t(layer.gamma),
        _t(layer.beta),
        training=False,
        eps=layer.epsilon,
    )
    return F.relu(y) if relu else y


def _torch_resnext(x, unit):
    h = _torch_conv(_torch_bn_relu(x, unit.bn_a), unit.conv_a.kernel)
    h = _torch_conv(
        _torch_bn_relu(h, unit.bn_b),
        unit.conv_b.kernel,
        stride=unit.strides,
        padding=1,
        groups=unit.cardinality,
    )
    h = _torch_conv(_torch_bn_relu(h, unit.bn_c), unit.conv_c.kernel)
    if unit.project:
        x = _torch_conv(
            _torch_bn_relu(x, unit.bn_projection),
            unit.conv_projection.kernel,
            stride=unit.strides,
        )
    return x + h


def _torch_cru(x, unit, factors):
    if unit.project:
        p = _torch_conv(
            _torch_bn_relu(x, unit.bn_projection), unit.projection_kernel
        )
        x = _torch_conv(
            _torch_bn_relu(x, unit.bn_shortcut),
            unit.projection_kernel,
            stride=unit.strides,
        )
    else:
        p = x
    reduction, depthwise = factors
    h = _torch_conv(_torch_bn_relu(p, unit.bn_reduce), reduction)
    # Depthwise (3, 3, D, 1) -> PyTorch (D, 1, 3, 3).
    h = F.conv2d(
        h,
        _t(depthwise).permute(2, 3, 0, 1),
        stride=unit.strides,
        padding=1,
        groups=unit.dim,
    )
    h = _torch_conv(_torch_bn_relu(h, unit.bn_mix), unit.conv_mix.kernel)
    h = _torch_conv(_torch_bn_relu(h, unit.bn_expand), unit.conv_expand.kernel)
    return x + h


def torch_reference_forward(backbone, images):
    """CRU-Net inference written with PyTorch's padding conventions.

    The shared factors are taken once per group from the group's first unit
    and reused for the following units, as the paper defines the network.
    """
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    x = _torch_conv(x, backbone.stem_conv.kernel, stride=2, padding=3)
    x = _torch_bn_relu(x, backbone.stem_bn)
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    outputs = {}
    for index, units in enumerate(backbone.stage_blocks):
        group = backbone.cru_share_units[index] or len(units)
        for i, unit in enumerate(units):
            if isinstance(unit, PreActResNeXtUnit):
                x = _torch_resnext(x, unit)
                continue
            if i % group == 0:
                factors = (
                    unit.factors.reduction_kernel,
                    unit.factors.depthwise_kernel,
                )
            x = _torch_cru(x, unit, factors)
        outputs[f"stage{index + 1}"] = x.permute(0, 2, 3, 1).numpy()
    x = _torch_bn_relu(x, backbone.head_bn)
    outputs["pooled_output"] = x.mean(dim=(2, 3)).numpy()
    return outputs


def test_forward_matches_pytorch_reference(tiny_backbone):
    images = np.random.default_rng(1).normal(size=(2, 32, 32, 3))
    images = images.astype("float32")
    outputs = tiny_backbone.predict(images, verbose=0)
    expected = torch_reference_forward(tiny_backbone, images)
    assert outputs["pooled_output"].shape == (2, 256)
    assert [outputs[f"stage{i}"].shape for i in range(1, 5)] == [
        (2, 8, 8, 32),
        (2, 4, 4, 64),
        (2, 2, 2, 128),
        (2, 1, 1, 256),
    ]
    for key, value in expected.items():
        np.testing.assert_allclose(
            outputs[key], value, rtol=1e-4, atol=1e-4, err_msg=key
        )


# --- Weight sharing --------------------------------------------------------


def test_shared_kernels_are_one_variable(tiny_backbone):
    sets = factor_sets(tiny_backbone)
    assert len(sets) == FACTOR_SETS["crunet_tiny"]
    weight_ids = [id(w) for w in tiny_backbone.weights]
    assert len(weight_ids) == len(set(weight_ids))
    for factors in sets:
        for kernel in (factors.reduction_kernel, factors.depthwise_kernel):
            assert weight_ids.count(id(kernel)) == 1
    # Stage 3 (4 units, 2 per set): units 1-2 share one set, 3-4 another.
    stage3 = tiny_backbone.stage_blocks[2]
    assert stage3[0].factors is stage3[1].factors
    assert stage3[2].factors is stage3[3].factors
    assert stage3[1].factors is not stage3[2].factors
    kernel = stage3[0].factors.reduction_kernel
    assert stage3[1].factors.reduction_kernel is kernel


def _copy_weights(source, target):
    """Copies weights layer by layer (shared kernels to every unit's copy)."""
    for src, dst in zip(source.backbone.layers, target.backbone.layers):
        assert src.name == dst.name
        dst.set_weights(src.get_weights())
    target.output_dense.set_weights(source.output_dense.get_weights())


# Two small CRU stages (one unit, then four with two shared sets): the
# same wiring as the presets at a fraction of the compile time.
MINI_CONFIG = dict(
    image_shape=(16, 16, 3),
    stem_filters=8,
    stage_units=[1, 4],
    stage_filters=[16, 16],
    stage_widths=[8, 8],
    cardinality=4,
    cru_dims=[8, 8],
    cru_share_units=[0, 2],
)


def test_gradient_step_updates_shared_kernels_once():
    keras.utils.set_random_seed(3)
    shared = CRUNetImageClassifier(
        CRUNetBackbone(**MINI_CONFIG), num_classes=4, compile=False
    )
    unshared = CRUNetImageClassifier(
        CRUNetBackbone(**MINI_CONFIG, share=False), num_classes=4, compile=False
    )
    _copy_weights(shared, unshared)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 4, size=(8,))

    def units_of(model):
        return [
            layer
            for layer in model.backbone.layers
            if isinstance(layer, CollectiveResidualUnit)
        ]

    def kernels(model):
        return [
            (
                keras.ops.convert_to_numpy(u.factors.reduction_kernel),
                keras.ops.convert_to_numpy(u.factors.depthwise_kernel),
            )
            for u in units_of(model)
        ]

    before = kernels(unshared)
    for model in (shared, unshared):
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(
            images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0
        )
    after_shared = kernels(shared)
    after_unshared = kernels(unshared)

    # Tied weights: the shared kernel moves by the SUM of the per-unit
    # gradients, i.e. the sum of the moves of the unshared copies.
    shared_units = units_of(shared)
    groups = {}
    for i, unit in enumerate(shared_units):
        groups.setdefault(id(unit.factors), []).append(i)
    assert sorted(len(m) for m in groups.values()) == [1, 2, 2]
    for members in groups.values():
        for k in range(2):
            old = before[members[0]][k]
            moved = after_shared[members[0]][k] - old
            expected = sum(after_unshared[i][k] - before[i][k] for i in members)
            scale = np.abs(expected).max()
            assert scale > 0
            np.testing.assert_allclose(moved, expected, atol=1e-3 * scale)
            # One copy: every unit of the group sees the new values.
            for i in members:
                np.testing.assert_array_equal(after_shared[i][k], old + moved)
    # The rest of the network took the same step in both models.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(shared.output_dense.kernel),
        keras.ops.convert_to_numpy(unshared.output_dense.kernel),
        atol=1e-4,
    )


# --- Saving ----------------------------------------------------------------


def test_save_to_preset_keeps_one_copy_and_round_trips(tiny_backbone, tmp_path):
    preset = str(tmp_path / "crunet_tiny")
    tiny_backbone.save_to_preset(preset)
    names = []

    def collect(name, item):
        if isinstance(item, h5py.Dataset):
            names.append(name)

    with h5py.File(os.path.join(preset, "model.weights.h5"), "r") as f:
        f.visititems(collect)
    assert len(names) == len(tiny_backbone.weights)
    # Each set of factors (A and G) is stored once, under its first unit.
    stored_factors = [n for n in names if "/factors/" in n]
    assert len(stored_factors) == 2 * FACTOR_SETS["crunet_tiny"]

    loaded = CRUNetBackbone.from_preset(preset)
    assert loaded.get_config() == tiny_backbone.get_config()
    for a, b in zip(tiny_backbone.weights, loaded.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )
    stage3 = loaded.stage_blocks[2]
    assert stage3[0].factors is stage3[1].factors
    assert len(factor_sets(loaded)) == FACTOR_SETS["crunet_tiny"]
    images = np.random.default_rng(2).normal(size=(2, 32, 32, 3))
    images = images.astype("float32")
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0)["pooled_output"],
        tiny_backbone.predict(images, verbose=0)["pooled_output"],
        rtol=1e-5,
        atol=1e-5,
    )
    # The base class finds the registered subclass too.
    import keras_hub

    generic = keras_hub.models.Backbone.from_preset(preset)
    assert isinstance(generic, CRUNetBackbone)


def test_classifier_preset_round_trip(tmp_path):
    model = CRUNetImageClassifier.from_preset(
        "crunet_tiny", num_classes=3, image_shape=(None, None, 3)
    )
    # Default recipe: SGD with momentum, no decay on 1-D weights, logits.
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.momentum == 0.9
    assert model.loss.get_config()["from_logits"]
    preset = str(tmp_path / "classifier")
    model.save_to_preset(preset)
    loaded = CRUNetImageClassifier.from_preset(preset)
    assert loaded.num_classes == 3
    assert isinstance(loaded.backbone, CRUNetBackbone)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )
    assert len(factor_sets(loaded.backbone)) == FACTOR_SETS["crunet_tiny"]
    # A classifier preset predicts classes; without names, their ids.
    from PIL import Image

    from keras_superclass.inference import predict_classes
    from keras_superclass.inference import predict_files

    pixels = np.random.default_rng(0).integers(0, 256, (24, 20, 3), "uint8")
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    (labels,) = predict_files(preset, [str(tmp_path / "photo.png")], top_k=3)
    assert sorted(t["label"] for t in labels) == ["0", "1", "2"]
    assert sum(t["score"] for t in labels) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="2 class names for a classifier of 3"):
        predict_classes(loaded, [pixels], class_names=["a", "b"])
    # A backbone has no labels to name.
    with pytest.raises(ValueError, match="neither a pretraining task"):
        predict_files(loaded.backbone, [str(tmp_path / "photo.png")])


# --- SuperClass pretraining with a CRU-Net image encoder --------------------


def test_superclass_pretraining_with_crunet_encoder_learns():
    vocabulary_size, max_tokens, batch = 24, 5, 16
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
    labels = np.full((batch, max_tokens), -1, dtype="int32")
    for row in labels:
        count = rng.integers(1, max_tokens + 1)
        row[:count] = rng.choice(vocabulary_size, count, replace=False)

    backbone = CRUNetBackbone.from_preset("crunet_tiny")
    model = SuperClassClassifier(
        backbone=backbone, vocabulary_size=vocabulary_size, compile=False
    )
    model.compile(learning_rate=3e-3, warmup_steps=0, weight_decay=0.0)
    history = model.fit(
        images, labels, batch_size=batch, epochs=5, shuffle=False, verbose=0
    )
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


def test_superclass_task_with_crunet_encoder_round_trips(tmp_path):
    import numpy as np

    from keras_superclass.models import CRUNetBackbone
    from keras_superclass.models import SuperClassClassifier

    model = SuperClassClassifier(
        CRUNetBackbone.from_preset("crunet_tiny"), vocabulary_size=12
    )
    model.save_to_preset(str(tmp_path))
    loaded = SuperClassClassifier.from_preset(str(tmp_path))
    assert isinstance(loaded.backbone, CRUNetBackbone)
    x = np.random.normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
