"""The example scripts run as a user runs them, at tiny sizes."""

import json
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

once = pytest.mark.skipif(
    keras.config.backend() != "tensorflow",
    reason="The examples are backend-neutral scripts over pieces every "
    "backend's tests run; once per suite run (tensorflow: the fastest "
    "fit here) keeps CI time down.",
)


def run_example(script, out, *args):
    """Runs `examples/<script>` from a folder outside the repository."""
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script), *args],
        cwd=out,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(out, "cmp", "comparison.json")) as f:
        return json.load(f)


@once
def test_catlip_vs_superclass_runs_with_any_step_count(tmp_path):
    # 10 steps: not a multiple of 3 (the script's three logged epochs).
    results = run_example(
        "catlip_vs_superclass.py",
        tmp_path,
        *("--out", "cmp", "--num-train", "96", "--num-test", "48"),
        *("--steps", "10"),
    )
    assert results["steps"] == 10
    for name in ("probe_superclass", "probe_catlip"):
        assert results[name], name
    for fraction in (0.01, 0.1, 1.0):
        assert 0.0 <= results[f"transfer_init_{fraction}"] <= 1.0


@once
def test_superclass_vs_clip_runs_and_plots(tmp_path):
    results = run_example(
        "superclass_vs_clip.py",
        tmp_path,
        *("--out", "cmp", "--num-train", "96", "--num-test", "48"),
        *("--steps", "4", "--probe-epochs", "2"),
    )
    assert set(results) >= {"superclass", "clip", "lit_step_seconds"}
    assert "zero_shot" in results["superclass"]
    assert os.path.getsize(tmp_path / "cmp" / "comparison.png") > 0


def test_example_flags_refuse_a_step_count_below_one(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "catlip_vs_superclass.py"),
            "--steps",
            "0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "--steps: must be at least 1, got 0" in done.stderr
