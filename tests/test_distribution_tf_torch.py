"""Data parallelism on TensorFlow (`tf.distribute`) and PyTorch (DDP).

Each test trains a tiny SuperClass ViT 3 steps at global batch 8
data-parallel over 2 replicas and on one device, in subprocesses
(tests/distribution_runs.py), and checks that the logged losses, the
online IDF statistics and the weights agree within 1e-5 (float32).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

RUNNER = os.path.join(os.path.dirname(__file__), "distribution_runs.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(command, out):
    env = {
        **os.environ,
        "PYTHONPATH": REPO,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "KERAS_BACKEND": keras.backend.backend(),
    }
    done = subprocess.run(
        command + [str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(out, encoding="utf-8") as f:
        return json.load(f)


def check_equal_to_one_device(result):
    assert result["replicas"] == 2
    np.testing.assert_allclose(
        result["losses"], result["single_losses"], rtol=1e-5
    )
    assert result["cap_fq_rel"] <= 1e-5
    assert result["num_samples"] == [3.0, 3.0]
    assert result["weights_rel"] <= 1e-5


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.distribute runs on the tensorflow backend only",
)
def test_mirrored_strategy_equals_one_device(tmp_path):
    result = run([sys.executable, RUNNER], tmp_path / "result.json")
    check_equal_to_one_device(result)
    assert result["process_batch"] == 8  # one process: the global batch


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="torch.distributed runs on the torch backend only",
)
def test_torchrun_data_parallel_equals_one_device(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    result = run(
        torchrun + ["--standalone", "--nproc_per_node=2", RUNNER],
        tmp_path / "result.json",
    )
    check_equal_to_one_device(result)
    # Each process reads its own share of the shards and of each batch.
    assert result["reader_share"] == [0, 2]
    assert result["process_batch"] == 4
    # CLIP / SigLIP across processes (features gathered with gradients)
    # equal one process on the global batch.
    for name, gaps in result["contrastive"].items():
        assert gaps["loss_rel"] <= 1e-5 and gaps["grad_rel"] <= 1e-5, name


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="jax runs model parallelism (tests/test_distribution_jax.py)",
)
def test_unsupported_requests_fail_with_a_fix():
    from keras_superclass.distribution import activate

    with pytest.raises(NotImplementedError, match="KERAS_BACKEND=jax") as e:
        activate({"kind": "model"})
    # Also a ValueError: the command line reports it in one line.
    assert isinstance(e.value, ValueError)
    with pytest.raises(ValueError, match="mesh_shape"):
        activate({"kind": "data", "mesh_shape": [4, 2]})
