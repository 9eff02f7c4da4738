"""Training configs and checkpoints: parsing, errors, save/restore."""

import os

import numpy as np
import pytest
from keras import ops

from keras_superclass.models import SuperClassBackbone
from keras_superclass.models import SuperClassClassifier
from keras_superclass.training.checkpoints import CheckpointError
from keras_superclass.training.checkpoints import CheckpointManager
from keras_superclass.training.config import CONFIG_DIR
from keras_superclass.training.config import ConfigError
from keras_superclass.training.config import load_config
from keras_superclass.training.config import save_config

TINY = dict(
    image_shape=(32, 32, 3),
    patch_size=8,
    num_layers=1,
    num_heads=2,
    hidden_dim=32,
    mlp_dim=64,
)


@pytest.mark.parametrize(
    "name",
    sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml")),
)
def test_every_shipped_config_loads(name):
    config = load_config(name)
    t = config["training"]
    assert t["total_steps"] > 0
    assert (
        t["accumulation_steps"] * t["micro_batch_size"]
        == (t["global_batch_size"])
    )
    assert t["total_steps"] % t["steps_per_epoch"] == 0, name


def test_reference_schedule_numbers():
    config = load_config("cls_vit_b16_s512m_bs16k")
    assert config["training"]["total_steps"] == 512_000_000 // 16384
    assert config["training"]["beta_2"] is None  # the task recipe: 0.98
    assert SuperClassClassifier.recipe["beta_2"] == 0.98
    assert config["model"]["preset"] == "superclass_vit_b16"


def test_overrides_and_round_trip(tmp_path):
    config = load_config(
        "demo_tiny",
        overrides=["training.total_steps=10", "training.steps_per_epoch=5"],
    )
    assert config["training"]["total_steps"] == 10
    path = tmp_path / "config.yaml"
    save_config(config, path)
    again = load_config(str(path))
    assert again["training"] == config["training"]


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  learning_rat: 0.1\n  total_steps: 5\n")
    with pytest.raises(ConfigError, match=r"training\.learning_rat.*bad\.yaml"):
        load_config(str(path))
    # A key people look for that does nothing here says what to do.
    with pytest.raises(ConfigError, match="no validation pass.*probe"):
        load_config("demo_tiny", ["data.validation=val/*.tfrecord"])


def test_malformed_configs(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("training: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path))
    path.write_text("training:\n  global_batch_size: 10\n")
    with pytest.raises(ConfigError, match="total_steps"):
        load_config(str(path))
    path.write_text("training: 5\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(str(path))
    with pytest.raises(FileNotFoundError, match="demo_tiny"):
        load_config("no_such_config")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("demo_tiny", overrides=["training.total_steps"])
    with pytest.raises(ConfigError, match="multiple"):
        load_config(
            "demo_tiny",
            overrides=["training.micro_batch_size=48"],
        )
    with pytest.raises(ConfigError, match="resize_method.*'pil'"):
        load_config("demo_tiny", overrides=["data.resize_method=bilinear"])


def tiny_model(hidden_dim=32):
    backbone = SuperClassBackbone(**{**TINY, "hidden_dim": hidden_dim})
    model = SuperClassClassifier(backbone, vocabulary_size=20)
    return model


def test_checkpoints_round_trip_keep_and_errors(tmp_path):
    manager = CheckpointManager(tmp_path / "run", keep=2)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        manager.restore(tiny_model())
    model = tiny_model()
    x = np.random.normal(size=(4, 32, 32, 3)).astype("float32")
    y = np.array([[1, 2, -1]] * 4, "int32")
    model.fit(x, y, epochs=1, verbose=0)
    for step in (1, 2, 3):
        manager.save(model, step=step, epoch=step)
    assert manager.steps() == [2, 3]
    # An interrupted save (weights without metadata) is not a checkpoint.
    open(tmp_path / "run" / "ckpt-00000009.weights.h5", "wb").close()
    assert manager.latest_step() == 3

    restored = tiny_model()
    meta = manager.restore(restored)
    assert meta["epoch"] == 3
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    assert int(ops.convert_to_numpy(restored.optimizer.iterations)) == 1
    np.testing.assert_array_equal(
        ops.convert_to_numpy(restored.idf_statistics.cap_fq),
        ops.convert_to_numpy(model.idf_statistics.cap_fq),
    )
    with pytest.raises(CheckpointError, match="hidden_dim"):
        manager.restore(tiny_model(hidden_dim=64))
    with pytest.raises(
        CheckpointError,
        match="no checkpoint at step 0; its checkpoints are at steps 2, 3",
    ):
        manager.restore(tiny_model(), step=0)


def test_every_config_key_has_a_check():
    from keras_superclass.training.config import DEFAULTS
    from keras_superclass.training.config import FREE_FORM
    from keras_superclass.training.config_checks import RULES

    keys = set()
    for name, value in DEFAULTS.items():
        if not isinstance(value, dict):
            keys.add(name)
            continue
        keys.update(f"{name}.{k}" for k in value if k not in FREE_FORM)
    assert keys == set(RULES)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("training.total_steps=abc", "an integer >= 1, got 'abc'"),
        ("training.total_steps=true", "an integer >= 1, got True"),
        ("training.steps_per_epoch=0", "an integer >= 1, got 0"),
        ("training.learning_rate=fast", "a number >= 0 .*got 'fast'"),
        ("checkpoint.tensorboard=maybe", "true or false, got 'maybe'"),
        ("training.jit_compile=1", "one of true, false, 'auto', got 1"),
        ("loss.name=softmx", "one of .*'softmax'.*got 'softmx'"),
        ("loss.idf=sometimes", "one of 'online', 'fixed', 'none'"),
        ("training.dtype_policy=float33", "Keras dtype policy"),
        ("data.train=[1, 2]", "a file glob or a list of them"),
        ("checkpoint.dir=runs/{nme}", "only '{name}'"),
    ],
)
def test_bad_values_name_the_key_and_the_command_line(override, expected):
    key = override.split("=")[0].replace(".", r"\.")
    with pytest.raises(ConfigError, match=f"'{key}' on the command line"):
        load_config("demo_tiny", overrides=[override])
    with pytest.raises(ConfigError, match=expected):
        load_config("demo_tiny", overrides=[override])


def test_values_and_origins_from_a_file(tmp_path):
    path = tmp_path / "run.yaml"
    # YAML reads 5e-4 and 1e2 (no dot) as strings: taken as numbers.
    path.write_text(
        "training:\n  learning_rate: 5e-4\n  total_steps: 1e2\n"
        "  steps_per_epoch: 10\n"
    )
    config = load_config(str(path))
    assert config["training"]["learning_rate"] == 5e-4
    assert config["training"]["total_steps"] == 100
    assert isinstance(config["training"]["total_steps"], int)
    # A command-line value is blamed on the command line, not the file.
    with pytest.raises(ConfigError) as error:
        load_config(str(path), overrides=["training.steps_per_epoch=7"])
    assert "on the command line" in str(error.value)
    assert "run.yaml" not in str(error.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  total_steps: 1.5\n")
    with pytest.raises(ConfigError, match=r"total_steps' in .*bad\.yaml"):
        load_config(str(bad))
    # Origins are not saved with the config.
    config = load_config(str(path), ["training.total_steps=20"])
    save_config(config, tmp_path / "saved.yaml")
    assert "origins" not in (tmp_path / "saved.yaml").read_text()


def test_missing_paths_name_the_key(tmp_path):
    from keras_superclass.training.config_checks import check_paths

    def check(*overrides):
        # A tokenizer kind, so only the key under test is missing.
        overrides = ["data.tokenizer=word", *overrides]
        check_paths(load_config("demo_tiny", overrides=overrides))

    nothing = f"data.train={tmp_path}/nothing-*.tfrecord"
    with pytest.raises(ConfigError, match=r"'data\.train' on the command "):
        check(nothing)
    shard = tmp_path / "a.tfrecord"
    shard.write_bytes(b"")
    train = f"data.train={shard}"
    with pytest.raises(ConfigError, match=r"'data\.tokenizer' .*no-tok"):
        check(train, f"data.tokenizer={tmp_path}/no-tok")
    with pytest.raises(ConfigError, match=r"'data\.synset_vocabulary'"):
        check(
            train,
            "model.task=catlip",
            f"data.synset_vocabulary={tmp_path}/synsets.json",
        )
    with pytest.raises(ConfigError, match=r"'loss\.document_frequencies'"):
        check(train, f"loss.document_frequencies={tmp_path}/df.json")
    with pytest.raises(ConfigError, match=r"'model\.preset'"):
        check(train, "model.preset=superclass_vit_zz")
    check(train)  # everything there
    # A value from the config file names the file.
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{train: '{tmp_path}/none-*.tfrecord'}}\n")
    with pytest.raises(ConfigError, match=r"data\.train' in .*c\.yaml"):
        check_paths(
            load_config(
                str(config),
                [
                    "training.total_steps=5",
                    "training.steps_per_epoch=5",
                ],
            )
        )
