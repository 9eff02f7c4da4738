"""End-to-end training on demo shards: resume after SIGKILL, export, predict.

Runs the real `keras-superclass` command in subprocesses so a kill is a
real kill.
"""

import csv
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_superclass.utils import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_OVERRIDES = [
    "model.backbone.image_shape=[32, 32, 3]",
    "model.backbone.patch_size=8",
    "model.backbone.num_layers=1",
    "model.backbone.num_heads=2",
    "model.backbone.hidden_dim=32",
    "model.backbone.mlp_dim=64",
    "data.image_size=32",
    "data.shuffle_buffer=64",
    "training.global_batch_size=8",
    "training.total_steps=16",
    "training.steps_per_epoch=2",
    "training.warmup_steps=2",
    "checkpoint.keep=20",
    "data.deterministic=true",  # exact resume needs the fixed order
]


def cli(*args, check=True, quiet_env=True, **kwargs):
    """Runs `keras-superclass`; `quiet_env=False` runs it as a user would,
    without TF_CPP_MIN_LOG_LEVEL set."""
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if not quiet_env:
        env.pop("TF_CPP_MIN_LOG_LEVEL")
    command = [sys.executable, "-m", "keras_superclass.cli.main", *args]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from keras_superclass.data import write_demo_dataset
    from keras_superclass.data.document_frequency import iter_captions
    from keras_superclass.data.tokenizers import train_tokenizer

    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(
        root / "shards", num_train=96, num_test=16, seed=0, progress=False
    )
    train_glob = str(root / "shards" / "train" / "*.tfrecord")
    tokenizer = train_tokenizer(
        "word", iter_captions(train_glob), vocabulary_size=200, min_count=1
    )
    tokenizer.save_to_preset(str(root / "tokenizer"))
    return root, train_glob


def run_args(root, train_glob, run_dir):
    return [
        "train",
        "--config",
        "demo_tiny",
        *TINY_OVERRIDES,
        f"data.train={train_glob}",
        f"data.tokenizer={root / 'tokenizer'}",
        f"checkpoint.dir={run_dir}",
    ]


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.csv"), newline="") as f:
        return [
            (int(row["epoch"]), float(row["loss"])) for row in csv.DictReader(f)
        ]


def test_resume_after_sigkill_matches_an_uninterrupted_run(demo_data):
    root, train_glob = demo_data
    straight = str(root / "straight")
    cli(*run_args(root, train_glob, straight))
    expected = read_log(straight)
    assert [e for e, _ in expected] == list(range(8))

    killed = str(root / "killed")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_superclass.cli.main"]
        + run_args(root, train_glob, killed),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not glob.glob(os.path.join(killed, "ckpt-00000004.json")):
        assert process.poll() is None, "training ended before the kill"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # mid-run, no clean-up
    process.wait()
    steps = sorted(glob.glob(os.path.join(killed, "ckpt-*.json")))
    assert len(steps) < 8, "the run finished before it was killed"

    cli(*run_args(root, train_glob, killed), "--resume")
    resumed = read_log(killed)
    assert [e for e, _ in resumed] == list(range(8))
    np.testing.assert_allclose(
        [loss for _, loss in resumed],
        [loss for _, loss in expected],
        rtol=2e-4,
    )
    with open(os.path.join(killed, "ckpt-00000016.json")) as f:
        assert json.load(f)["step"] == 16

    # Export the finished run, then predict and reload it.
    preset = str(root / "preset")
    cli("export", "--run", killed, "--out", preset)
    image = os.path.join(str(root), "scene.png")
    from keras_superclass.data import demo_scene

    demo_scene_png(demo_scene, image)
    out = cli("predict", image, "--preset", preset, "--json", "--top-k", "3")
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(record["labels"]) == 3
    assert all(isinstance(t["label"], str) for t in record["labels"])

    import keras_hub

    import keras_superclass  # noqa: F401

    backbone = keras_hub.models.Backbone.from_preset(preset)
    x = np.random.normal(size=(2, 32, 32, 3)).astype("float32")
    from keras_superclass.models import SuperClassClassifier

    task = SuperClassClassifier.from_preset(preset)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(backbone(x)["pooled_output"]),
        keras.ops.convert_to_numpy(task.backbone(x)["pooled_output"]),
        atol=1e-6,
    )


def demo_scene_png(demo_scene, path):
    from PIL import Image

    scene = demo_scene(0, seed=1, split="test")
    pixels = scene["image"] if isinstance(scene, dict) else scene[0]
    Image.fromarray(np.asarray(pixels, dtype="uint8")).save(path)


def test_training_errors_are_clear(demo_data, tmp_path, monkeypatch):
    root, train_glob = demo_data
    run_dir = tmp_path / "run"
    # A bfloat16 run under jax keeps XLA:CPU's bf16 (YNNPACK) matmuls, so
    # nothing is said; with them turned off by the user's XLA_FLAGS it
    # warns before the model is built. torch and TensorFlow never warn
    # (on a CPU with bf16 instructions).
    bf16_resume = (
        *run_args(root, train_glob, run_dir),
        "training.dtype_policy=mixed_bfloat16",
        "--resume",
    )
    # (This process's XLA_FLAGS hold the package's own default.)
    own_flags = os.environ.get("XLA_FLAGS", "").split()
    package_default = [f for f in own_flags if f != xla_flags.CPU_MATMUL_FLAG]
    with monkeypatch.context() as patch:
        patch.setenv("XLA_FLAGS", " ".join(package_default))
        result = cli(*bf16_resume, check=False)
        assert result.returncode == 2
        assert "no complete checkpoint" in result.stderr
        assert "bfloat16 (YNNPACK) matmuls" not in result.stderr
        user_flags = [*package_default, xla_flags.CPU_MATMUL_FLAG]
        patch.setenv("XLA_FLAGS", " ".join(user_flags))
        result = cli(*bf16_resume, check=False)
    if xla_flags.cpu_has_bf16_matmul_instructions() is False:
        # This CPU has no bf16 instructions: that warning comes instead,
        # on every backend (test_xla_flags covers both warnings anywhere).
        assert "no bfloat16 matmul instructions" in result.stderr
    else:
        warned = "bfloat16 (YNNPACK) matmuls turned off" in result.stderr
        assert warned == (keras.config.backend() == "jax"), result.stderr

    result = cli(
        *run_args(root, str(tmp_path / "nothing-*.tfrecord"), run_dir),
        check=False,
    )
    assert result.returncode == 2
    assert "nothing-" in result.stderr
    assert "'data.train' on the command line" in result.stderr
    assert not run_dir.exists()  # nothing is created before the checks

    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  total_step: 3\n")
    result = cli("train", "--config", str(bad), check=False)
    assert result.returncode == 2
    assert (
        "training.total_step" in result.stderr and "bad.yaml" in result.stderr
    )


def test_checkpoint_of_another_model_size_is_refused(demo_data, tmp_path):
    root, train_glob = demo_data
    run_dir = tmp_path / "run"
    args = run_args(root, train_glob, run_dir)
    cli(*args, "training.total_steps=2")
    result = cli(
        *args,
        "training.total_steps=2",
        "model.backbone.hidden_dim=48",
        "--resume",
        check=False,
    )
    assert result.returncode == 2
    assert "different model" in result.stderr and "hidden_dim" in result.stderr
    result = cli(*args, "training.total_steps=2", check=False)
    assert result.returncode == 2
    assert "already holds checkpoints" in result.stderr


# Log lines of TensorFlow, XLA and absl ("I0000 00:00:..." and the like)
# and Python warnings.
NOISE = re.compile(r"^(WARNING: All log|[IWEF]\d{4} |WARNING:absl|.*Warning:)")


def test_tensorboard_plain_log_quiet_output_and_finished_resume(
    demo_data, tmp_path
):
    root, train_glob = demo_data
    run_dir = tmp_path / "run"
    args = [
        *run_args(root, train_glob, run_dir),
        "training.total_steps=2",
        "training.warmup_steps=1",  # below total_steps: no warning
        "checkpoint.tensorboard=true",
    ]
    result = cli(*args, quiet_env=False)
    assert glob.glob(str(run_dir / "tensorboard" / "train" / "events.*"))
    with open(run_dir / "log.csv") as f:
        header = f.readline().strip().split(",")
    assert "loss" in header
    assert not [h for h in header if h.startswith("val_")], header
    # Throughput: in the bar of an epoch's later steps and in the log.
    with open(run_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(float(row["images_per_second"]) > 0 for row in rows), rows
    assert "images_per_second: " in result.stdout
    # Where it trains: the devices (or replicas) are named up front.
    assert "Training 2 steps at a global batch of " in result.stdout
    assert " on one device" in result.stdout
    noise = [x for x in result.stderr.splitlines() if NOISE.match(x)]
    assert not noise, result.stderr

    # Resuming a finished run says so.
    result = cli(*args, "--resume", quiet_env=False)
    assert "is complete (step 2 of 2)" in result.stdout
    assert str(run_dir) in result.stdout
    assert not [x for x in result.stderr.splitlines() if NOISE.match(x)]


def test_bad_values_fail_before_anything_is_built(demo_data, tmp_path, capsys):
    from keras_superclass.cli.main import main

    root, train_glob = demo_data
    run_dir = tmp_path / "run"
    for override, key in [
        ("training.learning_rate=fast", "training.learning_rate"),
        ("training.total_steps=abc", "training.total_steps"),
        (f"data.tokenizer={tmp_path}/no-tokenizer", "data.tokenizer"),
    ]:
        assert main([*run_args(root, train_glob, run_dir), override]) == 2
        error = capsys.readouterr().err
        assert f"'{key}' on the command line" in error
        assert "Traceback" not in error
        assert not run_dir.exists()
    # An image size the patches do not tile names the config keys.
    override = "model.backbone.patch_size=7"
    assert main([*run_args(root, train_glob, run_dir), override]) == 2
    error = capsys.readouterr().err
    assert "not divisible by the patch size 7" in error
    assert "'model.backbone.patch_size'" in error and not run_dir.exists()


def test_skipped_records_are_reported_and_export_options(
    demo_data, tmp_path, capsys
):
    from keras_superclass.cli.main import main
    from keras_superclass.data import demo_scene
    from keras_superclass.data import schema
    from keras_superclass.data.corrupt import write_corrupt_shard

    root, train_glob = demo_data
    shards = tmp_path / "shards"
    shards.mkdir()
    for path in glob.glob(train_glob):
        shutil.copy(path, shards)
    demo_scene_png(demo_scene, str(tmp_path / "good.png"))
    write_corrupt_shard(
        str(shards / "zz-corrupt.tfrecord"),
        (tmp_path / "good.png").read_bytes(),
        kinds=[schema.UNDECODABLE_IMAGE],
    )
    run_dir = tmp_path / "run"
    args = run_args(root, str(shards / "*.tfrecord"), run_dir)
    # A small shuffle buffer: the bad record is read in the first epoch.
    assert main([*args, "training.total_steps=2", "data.shuffle_buffer=1"]) == 0
    # Counted again each time the endless stream reads the shard.
    assert re.search(
        r"Epoch 1: corrupt records skipped: undecodable_image=[1-9]",
        capsys.readouterr().out,
    )

    # Exporting a step that does not exist lists the steps that do.
    out = str(tmp_path / "preset")
    assert main(["export", "--run", str(run_dir), "--step", "0", "--out", out])
    error = capsys.readouterr().err
    assert "no checkpoint at step 0; its checkpoints are at steps 2" in error
    assert not os.path.exists(out)

    # The run's architecture, trained and at random initialisation.
    random_out = str(tmp_path / "random")
    assert main(["export", "--run", str(run_dir), "--out", out]) == 0
    assert (
        main(
            ["export", "--run", str(run_dir), "--random-init"]
            + ["--out", random_out]
        )
        == 0
    )
    assert "random initialisation" in capsys.readouterr().out
    # The trained preset is not replaced by a second export into it.
    again = ["export", "--run", str(run_dir), "--random-init", "--out", out]
    assert main(again) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    import keras_hub

    trained = keras_hub.models.Backbone.from_preset(out).get_weights()
    random = keras_hub.models.Backbone.from_preset(random_out).get_weights()
    assert [w.shape for w in trained] == [w.shape for w in random]
    assert not all(np.array_equal(a, b) for a, b in zip(trained, random))
    # The preset holds no optimizer state of the run: it loads quietly.
    import warnings

    from keras_superclass.models import SuperClassClassifier

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SuperClassClassifier.from_preset(out)
    assert not [w for w in caught if "Skipping" in str(w.message)]
