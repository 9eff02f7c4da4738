"""XLA and oneDNN settings the package makes for CPU training (jax, TF).

Recent XLA sends float32 matmuls on a CPU to YNNPACK. On the ViT train
step XLA's own matmuls are faster: S/16 at batch 16 took 3.2 s instead of
4.0-4.1 s per step under jax; tensorflow's XLA (2.8-3.0 s either way) was
unchanged (`benchmarks/train_step.py`, see its README). bfloat16 is the
other way round: YNNPACK's are the only bf16 matmul kernels XLA:CPU has,
and the package's jax layers put their bf16 products in the form they take
(`layers/xla_cpu_forms.matmul`), so a jax run whose policy computes in
bfloat16 keeps XLA's default (`choose_cpu_matmuls`, which `train` calls).
The flag only concerns CPU compilation: GPU and TPU runs are unaffected.

XLA reads `XLA_FLAGS` once, before its first compilation, and aborts on a
flag it does not know. So the flag is added only for the XLA builds it was
measured with, only when the user's `XLA_FLAGS` does not set it already,
and only takes effect when the package is imported before the first
computation (as `import keras_superclass` at the top of a script does).
XLA's own default comes back with
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot`.

TensorFlow runs its CPU matmuls on oneDNN only on CPUs with AVX-512's
neural-network extensions, and on Eigen's slower kernels elsewhere: on a
2-core AVX2 AMD EPYC its float32 S/16 step took 5.8-7.1 s on Eigen and
4.6-4.7 s on oneDNN. `set_tensorflow_onednn_default` turns oneDNN on
(`TF_ENABLE_ONEDNN_OPTS=1`) unless the user chose; TensorFlow reads it
when it is first imported.
"""

import importlib.metadata
import os
import platform
import sys

CPU_MATMUL_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
_FLAG_NAME = CPU_MATMUL_FLAG[:-1]
_added_by_package = False  # set by `set_cpu_matmul_default`
# The first releases whose XLA knows the flag (both were measured).
_KNOWN_FROM = {"jaxlib": (0, 10), "tensorflow": (2, 21)}


def _version(distribution):
    """`(major, minor)` of an installed distribution, `None` if absent."""
    try:
        text = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def flag_is_known():
    """Whether every installed XLA (jaxlib, tensorflow) accepts the flag."""
    found = False
    for distribution, first in _KNOWN_FROM.items():
        version = _version(distribution)
        if version is None:
            continue
        if version < first:
            return False
        found = True
    return found


def set_cpu_matmul_default(environ=None):
    """Adds `CPU_MATMUL_FLAG` to `XLA_FLAGS` unless the user chose.

    Returns:
        Whether the flag was added.
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return False  # the user's own choice wins
    if not flag_is_known():
        return False
    environ["XLA_FLAGS"] = f"{flags} {CPU_MATMUL_FLAG}".strip()
    global _added_by_package
    _added_by_package = True
    return True


def set_tensorflow_onednn_default(environ=None):
    """Sets `TF_ENABLE_ONEDNN_OPTS=1` unless the user chose, on x86 (where
    it was measured), before TensorFlow is imported (it reads it then).

    Returns:
        Whether the variable was set.
    """
    environ = os.environ if environ is None else environ
    if "TF_ENABLE_ONEDNN_OPTS" in environ or "tensorflow" in sys.modules:
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    return True


def cpu_bf16_dots_in_ynnpack(environ=None):
    """Whether `XLA_FLAGS` leaves XLA:CPU's bfloat16 dots to YNNPACK.

    XLA's default does (`individual_dot` among the fusion types); the
    package's float32 default turns it off. An XLA too old to know the
    flag has no YNNPACK dots.
    """
    environ = os.environ if environ is None else environ
    value = None
    for flag in environ.get("XLA_FLAGS", "").split():
        name, _, text = flag.partition("=")
        if name == _FLAG_NAME:
            value = text  # XLA takes the last one
    if value is None:
        return flag_is_known()
    return any(
        choice.strip().lower().lstrip("+").endswith("individual_dot")
        for choice in value.split(",")
        if not choice.strip().startswith("-")
    )


def choose_cpu_matmuls(compute_dtype, environ=None):
    """Picks XLA:CPU's matmul kernels for a jax run's compute dtype.

    A bfloat16 compute dtype gets XLA's default back (YNNPACK's dots,
    which the package's jax layers feed in their form: S/16's bf16 step
    27-31% faster in paired runs, `benchmarks/README.md`), any
    other keeps `CPU_MATMUL_FLAG`. Only the package's own default changes,
    never a flag the user set, and only before jax first computes (XLA
    reads `XLA_FLAGS` then): call it before building a model.

    Args:
        compute_dtype: the dtype policy's compute dtype, e.g. "bfloat16".
        environ: the environment to change (default `os.environ`).

    Returns:
        Whether `XLA_FLAGS` was changed.
    """
    import keras

    environ = os.environ if environ is None else environ
    if keras.backend.backend() != "jax" or not _added_by_package:
        return False
    if _jax_started():
        return False
    flags = environ.get("XLA_FLAGS", "").split()
    kept = [flag for flag in flags if flag != CPU_MATMUL_FLAG]
    if compute_dtype != "bfloat16":
        kept.append(CPU_MATMUL_FLAG)
    if kept == flags:
        return False
    environ["XLA_FLAGS"] = " ".join(kept)
    return True


def _jax_started():
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge  # no public form of this question

    return xla_bridge.backends_are_initialized()


def cpu_has_bf16_matmul_instructions(cpuinfo="/proc/cpuinfo"):
    """Whether this CPU has bfloat16 matmul instructions (AVX512-BF16 or
    AMX-BF16); `None` where `cpuinfo` does not say (not Linux on x86).

    Without them bf16 is slower than float32: on an AVX2 AMD EPYC the
    S/16 bf16 step took about 1.5x as long as the float32 one under jax
    and TensorFlow (`benchmarks/README.md`, eighteenth pass), and 1.2x
    under PyTorch, whose bf16 matmuls (7-140x slower than its float32
    ones there) the package computes in float32 (`torch_linear.py`,
    twentieth pass).
    """
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    flags = set(value.split())
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return None


def jax_or_tensorflow_on_cpu():
    """Whether the backend is jax or TensorFlow computing on a CPU.

    There XLA (jax; TensorFlow for the ops Keras compiles on a CPU) lacks
    some fused kernels that PyTorch and GPU / TPU libraries have, and a
    few layers take a faster formulation.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() == "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")
    return False


def backend_on_cpu():
    """Whether the Keras backend computes on a CPU (PyTorch: no CUDA)."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        return not torch.cuda.is_available()
    return jax_or_tensorflow_on_cpu()
