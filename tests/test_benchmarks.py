"""The step benchmarks run end to end (tiny sizes) on each backend."""

import json
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_benchmark(script, *args):
    """Runs `benchmarks/<script>` with `args`; returns its last JSON line."""
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_step_parts_small_runs_and_reports_every_part():
    result = run_benchmark("step_parts.py", "--small", "--repeats", "2")
    attention = result["attention_fwd_bwd_ms"]
    assert {"keras_dot_product_attention", "explicit_attention"} <= set(
        attention
    )
    assert set(result["adamw_update_ms"]) == {
        "keras_adamw",
        "package_adamw",
        "reference_torch_adamw",
    }
    assert {"block_mlp", "matmuls_only"} <= set(result["mlp_fwd_bwd_ms"])
    assert "matmuls_only" in result["mlp_matmul_gflops"]
    if result["backend"] != "torch":
        assert "reference_torch_block_mlp" in result["mlp_fwd_bwd_ms"]
    if result["backend"] == "jax":
        assert len(result["jax_train_step_ms"]) == 8
        assert "jax_custom_backward" in attention
    not_positive = {
        f"{part_name}.{name}": value
        for part_name, part in result.items()
        if isinstance(part, dict)
        for name, value in part.items()
        if not value > 0
    }
    assert not not_positive, result


def test_train_step_device_check_reports_both_sides():
    # The interleaved benchmark at tiny sizes: ours on this backend and
    # the PyTorch reference, each in its own process, one JSON line.
    import keras

    backend = keras.backend.backend()
    result = run_benchmark(
        "train_step.py", "--device-check", "--backends", backend, "--json"
    )
    assert result["backend"] == backend
    assert result["cpu_model"] and result["cpu_cores"] >= 1
    assert set(result["isa"]) >= {"avx2", "avx512f", "avx512_bf16"}
    for side in ("", "reference_"):
        assert len(result[f"{side}ms_steps"]) >= 2
        imports = result[f"{side}rss_after_imports_mb"]
        assert 0 < imports <= result[f"{side}peak_rss_mb"]
    assert result["ratio_vs_reference"] > 0
    assert result["peak_rss_beyond_imports_vs_reference"] > 0
    assert result["setup"]["other_frameworks"] == "importable"
    # The ceiling is the fastest installed library's matmul (all three
    # frameworks are installed here), so no MFU rests on a slow kernel.
    by_library = result["matmul_gflops_by_library"]
    assert {"torch", "jax", "tensorflow", "numpy"} <= set(by_library)
    fastest = max(f["float32"] for f in by_library.values())
    assert result["matmul_gflops"]["float32"] == fastest


@pytest.mark.skipif(
    keras.config.backend() != "torch",
    reason="One backend suffices (the side's process is the same on each); "
    "torch's is the one Keras and keras_hub load the most others into.",
)
def test_train_step_own_framework_only_runs_without_the_others():
    result = run_benchmark(
        "train_step.py",
        "--device-check",
        "--backends",
        "torch",
        "--own-framework-only",
        "--no-reference",
        "--json",
    )
    assert result["setup"]["other_frameworks"] == "blocked"
    assert result["setup"]["frameworks_loaded"] == ["torch"]
    assert len(result["ms_steps"]) >= 2


def test_crunet_throughput_compares_the_xla_cpu_forms():
    result = run_benchmark(
        "crunet_throughput.py",
        "--preset",
        "crunet_tiny",
        "--image-size",
        "32",
        "--num-classes",
        "10",
        "--batch-size",
        "2",
        "--warmup",
        "0",
        "--steps",
        "1",
        "--kernels",
        "compare",
        "--json",
    )
    assert result["backend"] == keras.backend.backend()
    assert result["cpu_model"] and result["cpu_cores"] >= 1
    for variant in ("xla_cpu_forms", "native_kernels"):
        assert result[variant]["parameters"] == 193_042
        assert result[variant]["seconds_per_step"] > 0
    assert result["throughput_ratio_xla_cpu_forms_over_native_kernels"] > 0
