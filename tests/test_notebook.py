"""Executes the quickstart notebook top to bottom in its small setting."""

import os

import keras
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(
    keras.config.backend() != "jax",
    reason="The notebook selects its backend itself (KERAS_BACKEND in a "
    "cell, jax here); executing it once per suite run keeps CI time down.",
)
def test_quickstart_notebook_runs(tmp_path):
    import nbclient
    import nbformat

    path = os.path.join(REPO, "colab", "01_quickstart.ipynb")
    notebook = nbformat.read(path, as_version=4)
    os.environ["QUICKSTART_SMALL"] = "1"
    os.environ["PYTHONPATH"] = (
        REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    client = nbclient.NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert "same features: True" in outputs
    assert "label_shape: pretrained" in outputs
    assert os.path.isdir(tmp_path / "quickstart_preset")


@pytest.mark.skipif(
    keras.config.backend() != "jax",
    reason="The notebook runs keras.distribution on jax (its own "
    "KERAS_BACKEND cell); once per suite run keeps CI time down.",
)
def test_scale_out_notebook_runs_on_8_virtual_devices(tmp_path, monkeypatch):
    import nbclient
    import nbformat

    path = os.path.join(REPO, "colab", "06_scale_out.ipynb")
    notebook = nbformat.read(path, as_version=4)
    # The kernel is a new process: JAX there starts with 8 CPU devices.
    monkeypatch.setenv("SCALE_OUT_SMALL", "1")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv(
        "PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    client = nbclient.NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert "8 devices: cpu:0" in outputs
    assert "data parallel over 8 cpu devices" in outputs
    assert "8 device(s):" in outputs
    assert (tmp_path / "scale_out_throughput.png").stat().st_size > 1000
