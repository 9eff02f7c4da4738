"""bfloat16 products in the form XLA:CPU's YNNPACK kernels take (jax).

`xla_cpu_forms.matmul` must compute the same product in every transposed
form, and with XLA's YNNPACK dots on (what `choose_cpu_matmuls` keeps for
a bf16 run) every Dense and attention product of a transformer block,
forward and backward, must run as a bf16 x bf16 -> float32 YNNPACK dot,
and the block must give the gradients Keras's own layers give.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_superclass.utils import xla_flags

jax_only = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="XLA:CPU's dot forms: jax's CPU layers only",
)


@jax_only
@pytest.mark.parametrize("batch", [(), (2, 3)])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_computes_the_product_in_every_form(
    batch, transpose_a, transpose_b
):
    import jax.numpy as jnp

    from keras_superclass.layers.xla_cpu_forms import matmul

    rng = np.random.default_rng(0)
    a_shape = (*batch, 9, 5) if transpose_a else (*batch, 5, 9)
    b_shape = (*batch, 7, 9) if transpose_b else (*batch, 9, 7)
    a = jnp.asarray(rng.normal(size=a_shape), jnp.bfloat16)
    b = jnp.asarray(rng.normal(size=b_shape), jnp.bfloat16)
    a32, b32 = np.asarray(a, "float32"), np.asarray(b, "float32")
    expected = np.swapaxes(a32, -1, -2) if transpose_a else a32
    expected = expected @ (np.swapaxes(b32, -1, -2) if transpose_b else b32)

    out = matmul(a, b, transpose_a, transpose_b, ynnpack=True)
    assert out.dtype == jnp.float32  # the form YNNPACK takes
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    plain = matmul(a, b, transpose_a, transpose_b)
    assert plain.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(plain, "float32"), expected, rtol=2e-2, atol=5e-2
    )


_BLOCK_SCRIPT = textwrap.dedent(
    """
    import json, re
    import jax, keras, numpy as np
    keras.config.set_dtype_policy("mixed_bfloat16")
    from keras_superclass.layers.xla_cpu_forms import forced_kernels
    from keras_superclass.models.superclass.superclass_layers import (
        TransformerBlock,
    )

    block = TransformerBlock(hidden_dim=64, num_heads=2, mlp_dim=256)
    block.build((4, 50, 64))
    x = np.random.default_rng(0).normal(size=(4, 50, 64)).astype("float32")
    weights = [v.value for v in block.trainable_variables]
    target = np.random.default_rng(1).normal(size=(4, 50, 64))

    def loss(weights, x):
        out, _ = block.stateless_call(weights, [], x)
        out = out.astype("float32")
        return (out * out * target).sum()  # a gradient that varies

    def gradients(native):
        with forced_kernels(native):
            function = jax.jit(jax.grad(loss))
            text = function.lower(weights, x).compile().as_text()
            grads = function(weights, x)
            return [np.asarray(g, "float32") for g in grads], text

    ours, text = gradients(native=False)
    keras_own, _ = gradients(native=True)
    errors = [
        float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))
        for a, b in zip(ours, keras_own)
    ]
    # YNNPACK fusions computing bf16 x bf16 -> float32 (their signature).
    signature = (
        r"^%(\\S+) \\(param_0[.\\d]*: bf16\\[[\\d,]+\\], "
        r"param_1[.\\d]*: bf16\\[[\\d,]+\\]\\) -> f32\\["
    )
    bf16_dots = sum(
        f"kind=kCustom, calls=%{name}," in text
        for name in re.findall(signature, text, re.M)
    )
    print(json.dumps({"errors": errors, "bf16_dots": bf16_dots}))
    """
)


@jax_only
def test_block_products_run_on_ynnpack_bf16_kernels_with_keras_gradients():
    env = dict(os.environ, KERAS_BACKEND="jax")
    env["XLA_FLAGS"] = xla_flags.CPU_MATMUL_FLAG + "individual_dot"
    done = subprocess.run(
        [sys.executable, "-c", _BLOCK_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # 4 Dense layers (qkv, out, fc, proj): forward, input and kernel
    # grads; attention's 2 forward products and 5 backward ones.
    assert result["bf16_dots"] >= 12 + 7, result
    # Every gradient as Keras's own layers compute it, to bf16 rounding.
    assert max(result["errors"]) < 0.05, result["errors"]


def test_bf16_dots_in_ynnpack_reads_the_last_flag(monkeypatch):
    monkeypatch.setattr(xla_flags, "flag_is_known", lambda: True)
    read = xla_flags.cpu_bf16_dots_in_ynnpack
    assert read({})  # XLA's default
    assert not read({"XLA_FLAGS": xla_flags.CPU_MATMUL_FLAG})
    flag = xla_flags.CPU_MATMUL_FLAG
    assert read({"XLA_FLAGS": f"{flag} {flag}individual_dot"})
    assert read({"XLA_FLAGS": f"{flag}LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"})
    assert not read({"XLA_FLAGS": f"{flag}-individual_dot"})
    assert not read({"XLA_FLAGS": f"{flag}individual_dot {flag}"})
    monkeypatch.setattr(xla_flags, "flag_is_known", lambda: False)
    assert not read({})  # an XLA without YNNPACK dots


def test_choose_cpu_matmuls_changes_only_the_package_default(monkeypatch):
    monkeypatch.setattr(xla_flags, "_jax_started", lambda: False)
    monkeypatch.setattr(xla_flags, "_added_by_package", True)
    flag, other = xla_flags.CPU_MATMUL_FLAG, "--xla_cpu_use_thunk_runtime=true"
    environ = {"XLA_FLAGS": f"{other} {flag}"}
    changed = xla_flags.choose_cpu_matmuls("bfloat16", environ)
    if keras.backend.backend() != "jax":  # TensorFlow's dots are oneDNN's
        assert not changed and environ["XLA_FLAGS"] == f"{other} {flag}"
        return
    assert changed and environ["XLA_FLAGS"] == other
    assert xla_flags.choose_cpu_matmuls("float32", environ)
    assert environ["XLA_FLAGS"] == f"{other} {flag}"
    assert not xla_flags.choose_cpu_matmuls("float32", environ)
    # Once jax computes, XLA has read its flags: nothing changes.
    monkeypatch.setattr(xla_flags, "_jax_started", lambda: True)
    assert not xla_flags.choose_cpu_matmuls("bfloat16", environ)
    # A user's own choice stays.
    monkeypatch.setattr(xla_flags, "_jax_started", lambda: False)
    monkeypatch.setattr(xla_flags, "_added_by_package", False)
    assert not xla_flags.choose_cpu_matmuls("bfloat16", environ)
