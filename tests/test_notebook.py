"""Executes the tutorial notebooks top to bottom in their small settings.

Each runs once per suite run, on the jax suite: a notebook selects its
backend itself (KERAS_BACKEND in a cell, jax here), and 02 runs all three
backends in subprocesses of its own.
"""

import os
import re

import keras
import pytest

pytestmark = pytest.mark.skipif(
    keras.config.backend() != "jax",
    reason="The notebooks select their backend themselves (jax; 02 runs "
    "every backend in subprocesses); executing them once per suite run "
    "keeps CI time down.",
)


SMALL = {"QUICKSTART_SMALL": "1", "TUTORIAL_SMALL": "1"}


def test_quickstart_notebook_runs(tmp_path, run_notebook):
    outputs = run_notebook("01_quickstart.ipynb", tmp_path, **SMALL).text
    assert "same features: True" in outputs
    assert "label_shape: pretrained" in outputs
    assert os.path.isdir(tmp_path / "quickstart_preset")


def test_backend_switching_notebook_runs(tmp_path, run_notebook):
    outputs = run_notebook("02_backend_switching.ipynb", tmp_path, **SMALL).text
    # The same preset gives the same logits on jax, tensorflow and torch,
    # and a preset saved by torch predicts the same on jax.
    assert "outputs equal: True" in outputs
    assert "torch preset on jax, same outputs: True" in outputs
    for backend in ("jax", "tensorflow", "torch"):
        assert (tmp_path / f"trained_preset_{backend}").is_dir()


def test_your_own_data_notebook_runs(tmp_path, run_notebook):
    outputs = run_notebook("03_your_own_data.ipynb", tmp_path, **SMALL).text
    # The three broken rows are skipped and reported by name.
    assert "skipped: 3" in outputs
    assert "broken_not_an_image.png" in outputs
    # Pretraining on the captions lifts the probe on unseen labels.
    gain = float(
        re.search(r"probe gain from pretraining: ([-+.\d]+)", outputs)[1]
    )
    assert gain > 0.1, outputs
    assert (tmp_path / "my_preset").is_dir()


def test_catlip_notebook_runs(tmp_path, run_notebook):
    outputs = run_notebook(
        "05_catlip_and_transfer_init.ipynb", tmp_path, **SMALL
    ).text
    # Every colour class starts from its own synset row of the CatLIP head.
    assert "matched: 6/6 classes" in outputs
    first, last = map(
        float, re.search(r"CatLIP loss: ([.\d]+) -> ([.\d]+)", outputs).groups()
    )
    assert last < first
    assert "Transfer Init, no training:" in outputs


@pytest.mark.skipif(
    keras.config.backend() != "jax",
    reason="The notebook runs keras.distribution on jax (its own "
    "KERAS_BACKEND cell); once per suite run keeps CI time down.",
)
def test_scale_out_notebook_runs_on_8_virtual_devices(tmp_path, run_notebook):
    # The kernel is a new process: JAX there starts with 8 CPU devices.
    outputs = run_notebook(
        "06_scale_out.ipynb",
        tmp_path,
        SCALE_OUT_SMALL="1",
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        KERAS_BACKEND="jax",
    ).text
    assert "8 devices: cpu:0" in outputs
    assert "data parallel over 8 cpu devices" in outputs
    assert "8 device(s):" in outputs
    assert (tmp_path / "scale_out_throughput.png").stat().st_size > 1000
