"""Distributed training on JAX equals one device at the same global batch.

Virtual CPU devices need `XLA_FLAGS` before JAX starts, so the runs happen
in subprocesses (this file is also their script): one process with 8
devices trains the same tiny config on one device, data parallel over 8,
model parallel on a 2 x 4 mesh, and the data-parallel run resumed from
its first checkpoint as a run killed there would be (the SIGKILL itself is
tested in test_training_run.py); two processes with 4 devices each join
one run through `keras.distribution.initialize` (CPU collectives) and are
compared with the one-device run on the same global batches. All in one
test, so its subprocesses start once.
"""

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
jax_only = pytest.mark.skipif(
    keras.config.backend() != "jax",
    reason="keras.distribution on JAX; the tf.distribute and DDP paths "
    "have their own tests.",
)
OVERRIDES = [
    "model.backbone.image_shape=[16, 16, 3]",
    "model.backbone.patch_size=8",
    "model.backbone.num_layers=1",
    "model.backbone.num_heads=2",
    "model.backbone.hidden_dim=32",
    "model.backbone.mlp_dim=64",
    "data.tokenizer=clip",  # head 32 x 49,408, as B/16's 768 x 49,408
    "data.image_size=16",
    "data.shuffle_buffer=16",
    "data.deterministic=true",
    "training.global_batch_size=16",
    "training.micro_batch_size=8",  # accumulation over 2 micro-batches
    "training.total_steps=4",
    "training.steps_per_epoch=2",
    "training.warmup_steps=1",
    "checkpoint.tensorboard=false",
]
RTOL = 1e-5


def _config(data, run_dir, *extra):
    from keras_superclass.training.config import load_config

    return load_config(
        "demo_tiny",
        [*OVERRIDES, f"data.train={data}", f"checkpoint.dir={run_dir}", *extra],
    )


class _Record(keras.callbacks.Callback):
    """The loss after every micro-batch (the running mean of its epoch)."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def _weights(model):
    return {v.path: keras.ops.convert_to_numpy(v.value) for v in model.weights}


def _run(config, resume=False, models=None):
    from keras_superclass.training.trainer import train

    record = _Record()
    model, _ = train(config, resume=resume, callbacks=[record], verbose=0)
    if models is not None:
        models.append(model)
    return record.losses, _weights(model)


def _two_shard_reference(config):
    """One device trained on the global batches two processes read."""
    import tensorflow as tf

    from keras_superclass.distribution import RunDistribution
    from keras_superclass.training.builders import build_train_dataset
    from keras_superclass.training.trainer import build_compiled_model

    model = build_compiled_model(config)
    parts = [
        build_train_dataset(
            config,
            model.preprocessor,
            distribution=RunDistribution(
                num_replicas=2, data_shard_count=2, data_shard_index=i
            ),
        )
        for i in range(2)
    ]
    dataset = tf.data.Dataset.zip(tuple(parts)).map(
        lambda a, b: tuple(tf.concat([x, y], 0) for x, y in zip(a, b))
    )
    record = _Record()
    t = config["training"]
    model.fit(  # epochs as the trainer's: the logged loss is per epoch
        dataset,
        epochs=t["total_steps"] // t["steps_per_epoch"],
        steps_per_epoch=t["steps_per_epoch"] * t["accumulation_steps"],
        callbacks=[record],
        verbose=0,
    )
    return record.losses, _weights(model)


def _save(path, runs):
    arrays = {}
    for name, (losses, weights) in runs.items():
        arrays[f"{name}|losses"] = np.asarray(losses)
        for key, value in (weights or {}).items():
            arrays[f"{name}|{key}"] = value
    np.savez(path, **arrays)


def _load(path):
    runs = {}
    with np.load(path) as arrays:
        for key in arrays.files:
            name, item = key.split("|", 1)
            losses, weights = runs.setdefault(name, ([], {}))
            if item == "losses":
                losses.extend(arrays[key].tolist())
            else:
                weights[item] = arrays[key]
    return runs


def worker_one_process(data, out):
    """8 devices: one device, data parallel, model parallel, resume."""
    from keras_superclass.models import SuperClassClassifier

    def config(name, *extra):
        return _config(data, os.path.join(out, name), *extra)

    runs = {"single": _run(config("single", "distribution.kind=none"))}
    runs["two_shards"] = _two_shard_reference(
        config("ref", "distribution.kind=none")
    )
    runs["data"] = _run(config("data", "distribution.kind=auto"))
    models = []
    runs["model"] = _run(
        config(
            "model", "distribution.kind=model", "distribution.mesh_shape=[2,4]"
        ),
        models=models,
    )
    # Kill after the first checkpoint (step 2), resume: the data run's
    # directory as it was then (checkpoints are written atomically).
    resumed = config("resumed", "distribution.kind=data")
    shutil.copytree(os.path.join(out, "data"), resumed["checkpoint"]["dir"])
    for path in glob.glob(os.path.join(resumed["checkpoint"]["dir"], "*4.*")):
        os.remove(path)  # ckpt-00000004.{json,weights.h5}
    rest, weights = _run(resumed, resume=True)
    runs["resumed"] = (runs["data"][0][:4] + rest, weights)
    # A preset saved from the sharded run loads on one device.
    kernel = models[0].token_head.classifier.kernel.value
    shards = len({str(s.index) for s in kernel.addressable_shards})
    models[0].save_to_preset(os.path.join(out, "preset"))
    loaded = SuperClassClassifier.from_preset(os.path.join(out, "preset"))
    runs["preset"] = ([float(shards)], _weights(loaded))
    _save(os.path.join(out, "runs.npz"), runs)


def worker_multi_process(data, out):
    """One of two processes (4 devices each) of a data-parallel run."""
    config = _config(data, os.path.join(out, "multi"), "distribution.kind=auto")
    losses, weights = _run(config)
    import jax

    meta = {"devices": jax.device_count(), "local": jax.local_device_count()}
    if jax.process_index() == 0:
        _save(os.path.join(out, "multi.npz"), {"multi": (losses, weights)})
        with open(os.path.join(out, "multi.json"), "w") as f:
            json.dump(meta, f)


def _env(devices, cache, **extra):
    env = {
        **os.environ,
        "PYTHONPATH": REPO,
        "KERAS_BACKEND": "jax",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} "
        "--xla_backend_optimization_level=0 "
        "--xla_llvm_disable_expensive_passes=true",
        "JAX_PLATFORMS": "cpu",
        # Runs of one program compile once; CPU-cheap compilation (the
        # comparisons hold at any optimisation level).
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    return {**env, **extra}


def _start(role, data, out, env):
    return subprocess.Popen(
        [sys.executable, __file__, role, str(data), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-6000:]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from keras_superclass.data import write_demo_dataset

    root = tmp_path_factory.mktemp("dist")
    write_demo_dataset(
        root / "shards",
        num_train=64,
        num_test=0,
        image_size=32,
        records_per_shard=16,
        progress=False,
    )
    return root, str(root / "shards" / "train" / "*.tfrecord")


def _assert_same(run, reference, what):
    """Losses per step and IDF statistics within `RTOL` (relative); all
    weights together within `RTOL` (relative norm), and no tensor with an
    element off by more than 10 `RTOL` of its largest. Per element, float32
    roundoff in another summation order over the devices is amplified by
    Adam in weights whose gradient is (near) zero by cancellation, e.g.
    the attention's key bias."""
    losses, weights = run
    np.testing.assert_allclose(
        losses, reference[0], rtol=RTOL, err_msg=f"{what}: losses"
    )
    assert len(losses) == 8  # 4 steps x 2 micro-batches
    assert sorted(weights) == sorted(reference[1])
    idf = [k for k in weights if "idf_statistics" in k]
    assert len(idf) == 3, idf
    for key in idf:
        np.testing.assert_allclose(
            weights[key], reference[1][key], rtol=RTOL, err_msg=key
        )
    difference = total = 0.0
    for key, value in reference[1].items():
        delta = np.abs(weights[key] - value)
        checked = _without_key_bias(key, delta)
        largest = np.abs(_without_key_bias(key, value)).max()
        assert checked.max() <= 10 * RTOL * largest, (what, key)
        difference += float(np.sum(delta.astype("float64") ** 2))
        total += float(np.sum(value.astype("float64") ** 2))
    assert difference**0.5 <= RTOL * total**0.5, what


def _without_key_bias(key, array):
    """The attention's q, k, v biases less k's: softmax ignores a shift
    shared by every key, so its gradient is zero but for roundoff, and its
    values after Adam are roundoff scaled up to the learning rate (one
    element differed by 1e-4 of the largest on an AMD EPYC). It still
    counts in the norm over all weights."""
    if not key.endswith("attn/in_proj/bias"):
        return array
    third = array.shape[0] // 3
    return np.concatenate([array[:third], array[2 * third :]])


def _two_processes(root, shards):
    """Two processes x 4 devices, one data-parallel run; process 0's
    losses and weights."""
    out = root / "multi"
    out.mkdir()
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    processes = [
        _start(
            "multi",
            shards,
            out,
            _env(
                4,
                root / "cache",
                KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{port}",
                KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                KERAS_DISTRIBUTION_PROCESS_ID=str(i),
            ),
        )
        for i in range(2)
    ]
    for process in processes:
        _finish(process)
    with open(out / "multi.json") as f:
        assert json.load(f) == {"devices": 8, "local": 4}
    return _load(out / "multi.npz")["multi"]


# One test: the runs share their one-device references (and their
# subprocesses' start-up), whatever worker pytest-xdist gives it.
@jax_only
def test_distributed_runs_match_one_device(data):
    root, shards = data
    (root / "one").mkdir()
    _finish(_start("one", shards, root / "one", _env(8, root / "cache")))
    runs = _load(root / "one" / "runs.npz")
    _assert_same(runs["data"], runs["single"], "data parallel (8)")
    _assert_same(runs["model"], runs["single"], "model parallel (2 x 4)")
    _assert_same(runs["resumed"], runs["data"], "killed and resumed")
    # The preset of the sharded run (classifier split 4 ways) loads on one
    # device with the same weights.
    assert runs["preset"][0] == [4.0]
    preset = runs["preset"][1]
    assert sorted(preset) == sorted(runs["model"][1])
    for key, value in runs["model"][1].items():
        np.testing.assert_array_equal(preset[key], value, err_msg=key)
    multi = _two_processes(root, shards)
    _assert_same(multi, runs["two_shards"], "2 processes x 4")


def test_distribution_config_errors_name_key_and_fix():
    from keras_superclass.distribution import activate
    from keras_superclass.training.config import ConfigError
    from keras_superclass.training.config import load_config

    config = load_config("demo_tiny", ["distribution.mesh_shape=[2,4]"])
    assert config["distribution"]["mesh_shape"] == [2, 4]
    assert config["distribution"]["kind"] == "auto"
    bad = {
        "distribution.kind=pipeline": "one of 'auto', 'none'",
        "distribution.mesh_shape=[0, 4]": "positive integers",
        "distribution.model_parallel_weights=[['(', [model]]]": "regex",
        "distribution.devices=4": "Known keys here",
    }
    for override, expected in bad.items():
        with pytest.raises(ConfigError, match=re.escape(expected)) as error:
            load_config("demo_tiny", [override])
        assert override.split("=")[0] in str(error.value)
        assert "on the command line" in str(error.value)
    with pytest.raises(ValueError, match="axis_names"):
        activate({"axis_names": ["batch"]})
    run = activate({"kind": "none"})
    with run:
        assert run.process_batch_size(64) == 64 and run.is_chief
    from keras_superclass.distribution.base import RunDistribution

    three = RunDistribution(kind="data", num_replicas=3, num_devices=3)
    key = "training.global_batch_size"
    with pytest.raises(ValueError, match=f"16 \\('{key}'\\).*multiple of 3"):
        three.process_batch_size(16, key)


@jax_only
def test_a_weight_that_does_not_split_gets_the_config_hint():
    import jax
    from jax.sharding import AbstractMesh
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec

    from keras_superclass.distribution.jax_distribution import (
        JaxRunDistribution,
    )

    # JAX's own error for the demo's 77-token head split 2 ways (its
    # wording changed across releases; the hint must follow).
    mesh = AbstractMesh((2,), ("model",))
    sharding = NamedSharding(mesh, PartitionSpec(None, "model"))
    devices = jax.devices()[:1]
    run = JaxRunDistribution(
        keras.distribution.DataParallel(devices=devices),
        description="test mesh",
    )
    with pytest.raises(ValueError, match="distribution.mesh_shape") as error:
        with run.scope():
            sharding.shard_shape((128, 77))
    assert "dimension size is 77" in str(error.value)


if __name__ == "__main__":
    role, shards, out = sys.argv[1:4]
    sys.path.insert(0, REPO)
    {"one": worker_one_process, "multi": worker_multi_process}[role](
        shards, out
    )
