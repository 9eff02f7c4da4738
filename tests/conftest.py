"""Fixtures of the test suite; the set-up it shares with the docstring
examples lives in the repository's root conftest.py."""

import os
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_notebook(monkeypatch):
    """Executes `colab/<name>` top to bottom in a new kernel.

    `run_notebook(name, workdir, **env)` runs it in `workdir` with `env`
    set (the kernel and its subprocesses inherit it, and import this
    checkout) and returns `outputs` (every code-cell output) and `text`
    (their printed text).
    """

    def run(name, workdir, **env):
        import nbclient
        import nbformat

        notebook = nbformat.read(
            os.path.join(REPO, "colab", name), as_version=4
        )
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv(
            "PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
        )
        nbclient.NotebookClient(
            notebook,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
        ).execute()
        outputs = [
            output
            for cell in notebook.cells
            if cell.cell_type == "code"
            for output in cell.get("outputs", [])
        ]
        text = "".join(output.get("text", "") for output in outputs)
        return types.SimpleNamespace(outputs=outputs, text=text)

    return run
