"""The CPU kernel defaults the package sets on import (XLA, oneDNN)."""

import os
import platform
import subprocess
import sys

import keras
import pytest

from keras_superclass.utils import xla_flags


def test_flag_added_unless_the_user_chose(monkeypatch):
    monkeypatch.setattr(xla_flags, "flag_is_known", lambda: True)
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_flags.set_cpu_matmul_default(environ)
    assert environ["XLA_FLAGS"] == (
        "--xla_force_host_platform_device_count=8 " + xla_flags.CPU_MATMUL_FLAG
    )
    assert not xla_flags.set_cpu_matmul_default(environ)  # not twice
    own = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
    assert not xla_flags.set_cpu_matmul_default(own)
    assert own["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=dot"


def test_flag_left_out_for_an_xla_that_would_reject_it(monkeypatch):
    # XLA aborts the process on an unknown flag: older builds get none.
    versions = {"jaxlib": (0, 4), "tensorflow": (2, 21)}
    monkeypatch.setattr(xla_flags, "_version", versions.get)
    environ = {}
    assert not xla_flags.set_cpu_matmul_default(environ)
    assert "XLA_FLAGS" not in environ
    versions["jaxlib"] = (0, 10)
    assert xla_flags.set_cpu_matmul_default(environ)
    versions.clear()  # neither installed: nothing reads XLA_FLAGS
    assert not xla_flags.flag_is_known()


def test_importing_the_package_sets_it_before_the_first_compilation():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = (
        "import os, keras_superclass, keras; "
        "keras.ops.ones(2) * 2; print(os.environ['XLA_FLAGS'])"
    )
    assert xla_flags.CPU_MATMUL_FLAG in _python_output(code, env)


def _python_output(code, env):
    """What `python -c code` prints in a fresh process with `env`."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_onednn_turned_on_unless_the_user_chose(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.setattr(xla_flags.platform, "machine", lambda: "x86_64")
    environ = {}
    assert xla_flags.set_tensorflow_onednn_default(environ)
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    own = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert not xla_flags.set_tensorflow_onednn_default(own)
    assert own == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    monkeypatch.setattr(xla_flags.platform, "machine", lambda: "aarch64")
    assert not xla_flags.set_tensorflow_onednn_default({})  # not measured
    monkeypatch.setattr(xla_flags.platform, "machine", lambda: "x86_64")
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    assert not xla_flags.set_tensorflow_onednn_default({})  # too late


def test_tensorflow_imported_after_the_package_runs_on_onednn():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("oneDNN's default is set on x86 only")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    code = (
        "import keras_superclass\n"
        "from tensorflow.python.util import _pywrap_util_port\n"
        "print(_pywrap_util_port.IsMklEnabled())"
    )
    outputs = []
    for chosen in (None, "0"):
        if chosen is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = chosen
        outputs.append(_python_output(code, env).split()[-1])
    assert outputs == ["True", "False"]  # on by default; the user's 0 wins


def test_cpu_bf16_instructions_read_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f\n")
    assert xla_flags.cpu_has_bf16_matmul_instructions(path) is False
    path.write_text("flags\t\t: avx2 avx512f avx512_bf16\n")
    assert xla_flags.cpu_has_bf16_matmul_instructions(path) is True
    path.write_text("flags\t\t: avx2 amx_tile amx_bf16\n")
    assert xla_flags.cpu_has_bf16_matmul_instructions(path) is True
    path.write_text("Features\t: fp asimd bf16\n")  # an ARM CPU: unknown
    assert xla_flags.cpu_has_bf16_matmul_instructions(path) is None
    missing = tmp_path / "missing"
    assert xla_flags.cpu_has_bf16_matmul_instructions(missing) is None


def test_bfloat16_training_warns_on_a_cpu_without_bf16_instructions(
    monkeypatch,
):
    import warnings

    from keras_superclass.training import trainer

    def warnings_for(policy, has_instructions):
        monkeypatch.setattr(
            xla_flags,
            "cpu_has_bf16_matmul_instructions",
            lambda: has_instructions,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.warn_if_bfloat16_is_slow_here(policy)
        return " ".join(str(w.message) for w in caught)

    # The suite computes on the CPU on every backend.
    missing = "no bfloat16 matmul instructions"
    assert missing in warnings_for("mixed_bfloat16", False)
    assert "training.dtype_policy=float32" in warnings_for("bfloat16", False)
    assert missing not in warnings_for("mixed_bfloat16", True)
    # With bf16 instructions, jax warns about YNNPACK's dots turned off.
    monkeypatch.setenv("XLA_FLAGS", xla_flags.CPU_MATMUL_FLAG)
    ynnpack_off = "(YNNPACK) matmuls turned off"
    warned = ynnpack_off in warnings_for("mixed_bfloat16", True)
    assert warned == (keras.backend.backend() == "jax")
    assert ynnpack_off not in warnings_for("mixed_bfloat16", False)
    assert missing not in warnings_for("mixed_bfloat16", None)  # unknown
    assert warnings_for("float32", False) == ""
