"""Times the parts of the train step that issue-16 profiling singled out.

Each part is timed against its PyTorch reference in the same process,
interleaved (ours, reference, ours, ...), on the current Keras backend:

- attention: one ViT block's self-attention, forward and backward, through
  Keras's `ops.dot_product_attention`, through this package's
  `explicit_attention` (the path it takes on a CPU under XLA; under jax
  also with the custom backward the layer runs, `jax_custom_backward`),
  and through PyTorch's `scaled_dot_product_attention` (the reference's
  kernel);
- optimizer: one AdamW update of the S/16 classifier's 41M parameters,
  Keras's `AdamW`, this package's `AdamW` (fused under torch) and
  `torch.optim.AdamW` as the reference configures it;
- mlp: one ViT block's MLP (`x @ w1 + b1 -> exact GELU -> @ w2 + b2`),
  forward and backward with every gradient, on the current backend and in
  PyTorch, and the same six matmuls alone: says how much of a backend's
  block time is its matmul library (`mlp_matmul_gflops`) and how much the
  elementwise work around it;
- xla (jax only): the jitted train step compiled with XLA's default CPU
  matmuls (YNNPACK), with the package's default (XLA's own), and with
  the package's default plus one other XLA CPU option each (512-bit
  vectors, fast math, oneDNN, the concurrency-optimised scheduler, no
  fusion emitters, single-threaded Eigen), steps interleaved in one
  process.

Usage:
    KERAS_BACKEND=jax python benchmarks/step_parts.py
    KERAS_BACKEND=torch python benchmarks/step_parts.py --parts optimizer
    KERAS_BACKEND=jax python benchmarks/step_parts.py --parts mlp
    python benchmarks/step_parts.py --small   # tiny sizes: a smoke test
"""

import argparse
import json
import os
import statistics
import time

import numpy as np


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="attention,optimizer,mlp,xla")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--small", action="store_true")
    return parser.parse_args()


def interleaved(functions, repeats):
    """Median ms of each function, timed in turns after one warm-up."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    # Three significant digits: a part of a few microseconds (`--small`, a
    # fast CPU) must not round to 0.
    return {
        n: float(f"{1e3 * statistics.median(t):.3g}") for n, t in times.items()
    }


def block_until_ready(value):
    import keras

    if keras.backend.backend() == "jax":
        import jax

        jax.block_until_ready(value)
    return value


def attention_part(sizes, repeats):
    import keras
    import torch
    from keras import ops

    from keras_superclass.layers.attention import explicit_attention

    batch, length, heads, head_dim = sizes
    rng = np.random.default_rng(0)
    packed = rng.normal(size=(batch, length, 3, heads, head_dim))
    packed = packed.astype("float32")

    def loss_of(attention):
        return lambda qkv: ops.sum(ops.square(attention(qkv)))

    def fused(qkv):
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        return ops.dot_product_attention(q, k, v)

    functions = {
        "keras_dot_product_attention": _grad_function(loss_of(fused), packed),
        "explicit_attention": _grad_function(
            loss_of(explicit_attention), packed
        ),
    }
    if keras.backend.backend() == "jax":
        from keras_superclass.layers.attention import _jax_attention

        functions["jax_custom_backward"] = _grad_function(
            loss_of(_jax_attention(False)), packed
        )
    if keras.backend.backend() != "torch":

        def torch_sdpa(qkv):
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            return (out**2).sum()

        functions["reference_torch_sdpa"] = _torch_grad_function(
            torch_sdpa, packed
        )
    return interleaved(functions, repeats)


def _grad_function(loss, *values):
    """Forward and backward of `loss` at `values` (every gradient),
    compiled where it can be."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        arguments = [jax.numpy.asarray(v) for v in values]
        step = jax.jit(
            jax.value_and_grad(loss, argnums=tuple(range(len(values))))
        )
        return lambda: block_until_ready(step(*arguments))
    if backend == "tensorflow":
        import tensorflow as tf

        arguments = [tf.constant(v) for v in values]

        @tf.function  # as Keras runs this model's step (no XLA)
        def step():
            with tf.GradientTape() as tape:
                tape.watch(arguments)
                result = loss(*arguments)
            return tape.gradient(result, arguments)

        # Unused arguments get no gradient (None).
        return lambda: [g.numpy() for g in step() if g is not None]
    return _torch_grad_function(loss, *values)


def _torch_grad_function(loss, *values):
    """Forward and backward of a PyTorch `loss` at `values`."""
    import torch

    arguments = [torch.from_numpy(v).requires_grad_() for v in values]

    def step():
        for argument in arguments:
            argument.grad = None
        loss(*arguments).backward()

    return step


def mlp_part(sizes, repeats):
    import keras
    import torch
    from keras import ops

    from keras_superclass.layers.fused_dense import Dense
    from keras_superclass.layers.gelu_dense import gelu_dense

    rows, width, hidden = sizes
    rng = np.random.default_rng(0)
    values = [
        rng.normal(size=shape).astype("float32") * scale
        for shape, scale in (
            ((rows, width), 1.0),
            ((width, hidden), width**-0.5),
            ((hidden,), 0.02),
            ((hidden, width), hidden**-0.5),
            ((width,), 0.02),
        )
    ]

    c_proj = Dense(width)
    c_proj.build((None, hidden))

    def block_mlp(x, w1, b1, w2, b2):  # as TransformerBlock runs it
        mapping = [(c_proj.kernel, w2), (c_proj.bias, b2)]
        with keras.StatelessScope(state_mapping=mapping):
            out = gelu_dense(c_proj, ops.matmul(x, w1) + b1)
        return ops.sum(ops.square(out))

    def matmuls(x, w1, b1, w2, b2):
        return ops.sum(ops.square(ops.matmul(ops.matmul(x, w1), w2)))

    functions = {
        "block_mlp": _grad_function(block_mlp, *values),
        "matmuls_only": _grad_function(matmuls, *values),
    }
    if keras.backend.backend() != "torch":

        def torch_block_mlp(x, w1, b1, w2, b2):
            h = torch.nn.functional.gelu(torch.addmm(b1, x, w1))
            return (torch.addmm(b2, h, w2) ** 2).sum()

        def torch_matmuls(x, w1, b1, w2, b2):
            return ((x @ w1 @ w2) ** 2).sum()

        functions["reference_torch_block_mlp"] = _torch_grad_function(
            torch_block_mlp, *values
        )
        functions["reference_torch_matmuls_only"] = _torch_grad_function(
            torch_matmuls, *values
        )
    times = interleaved(functions, repeats)
    # Forward: x @ w1, h @ w2; backward: two input and two kernel grads.
    gflop = 6 * 2 * rows * width * hidden / 1e9
    gflops = {
        # Three significant digits, as the times: a slow tiny run (a
        # loaded CI machine) must not round to 0 GFLOP/s.
        name: float(f"{gflop / (ms / 1e3):.3g}")
        for name, ms in times.items()
        if name.endswith("matmuls_only")
    }
    return times, gflops


def optimizer_part(shapes, repeats):
    import keras
    import torch

    from keras_superclass.optimizers import AdamW

    rng = np.random.default_rng(0)
    values = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [rng.normal(size=s).astype("float32") * 1e-3 for s in shapes]
    settings = dict(weight_decay=0.2, beta_1=0.9, beta_2=0.98, epsilon=1e-6)

    def keras_update(optimizer_cls):
        variables = [keras.Variable(v) for v in values]
        tensors = [keras.ops.convert_to_tensor(g) for g in grads]
        optimizer = optimizer_cls(learning_rate=5e-4, **settings)
        optimizer.build(variables)
        if keras.backend.backend() == "jax":
            return _jax_update(optimizer, variables, tensors)
        if keras.backend.backend() == "tensorflow":
            return _tf_update(optimizer, variables, tensors)
        return lambda: optimizer.apply(tensors, variables)

    parameters = [torch.nn.Parameter(torch.from_numpy(v)) for v in values]
    for parameter, grad in zip(parameters, grads):
        parameter.grad = torch.from_numpy(grad)
    reference = torch.optim.AdamW(
        parameters, lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2
    )
    return interleaved(
        {
            "keras_adamw": keras_update(keras.optimizers.AdamW),
            "package_adamw": keras_update(AdamW),
            "reference_torch_adamw": reference.step,
        },
        repeats,
    )


def _jax_update(optimizer, variables, grads):
    """The update as `model.fit` runs it under jax: one jitted function."""
    import jax

    step = jax.jit(optimizer.stateless_apply, donate_argnums=(0, 2))
    state = {
        "optimizer": [v.value for v in optimizer.variables],
        "model": [v.value for v in variables],
    }

    def run():
        state["model"], state["optimizer"] = step(
            state["optimizer"], grads, state["model"]
        )
        jax.block_until_ready(state["model"])

    return run


def _tf_update(optimizer, variables, grads):
    """The update as `model.fit` runs it under TensorFlow: a tf.function."""
    import tensorflow as tf

    @tf.function(autograph=False)
    def step():
        optimizer.apply(grads, variables)

    return step


def xla_part(small, repeats):
    import jax

    from keras_superclass.models import SuperClassClassifier

    size, vocabulary, layers = (32, 1024, 2) if small else (224, 49408, 12)
    model = SuperClassClassifier.from_preset(
        "superclass_vit_ti16" if small else "superclass_vit_s16",
        vocabulary_size=vocabulary,
        preprocessor=None,
        compile=False,
        image_shape=(size, size, 3),
        num_layers=layers,
    )
    model.compile()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(16, size, size, 3)).astype("float32")
    ids = rng.integers(0, vocabulary, size=(16, 16)).astype("int32")
    model.train_on_batch(images[:2], ids[:2])  # builds optimizer + metrics
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    data = (jax.numpy.asarray(images), jax.numpy.asarray(ids))
    lowered = jax.jit(model.train_step).lower(state, data)
    # Options given at compile time override XLA_FLAGS for this module.
    variants = {
        "xla_cpu_ynnpack_matmuls": {
            "xla_cpu_experimental_ynn_fusion_type": (
                "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
            )
        },
        "xla_own_matmuls_package_default": {
            "xla_cpu_experimental_ynn_fusion_type": ""
        },
    }
    # Other CPU options XLA offers, each on top of the package's default
    # (tenth pass: none moved the S/16 step beyond +-3%).
    for name, option, value in (
        ("vector_width_512", "xla_cpu_prefer_vector_width", 512),
        ("fast_math", "xla_cpu_enable_fast_math", True),
        ("onednn", "xla_cpu_use_onednn", True),
        (
            "concurrency_scheduler",
            "xla_cpu_enable_concurrency_optimized_scheduler",
            True,
        ),
        ("no_fusion_emitters", "xla_cpu_use_fusion_emitters", False),
        ("single_thread_eigen", "xla_cpu_multi_thread_eigen", False),
    ):
        variants[name] = {
            "xla_cpu_experimental_ynn_fusion_type": "",
            option: value,
        }
    functions = {}
    for name, options in variants.items():
        compiled = lowered.compile(compiler_options=options)
        functions[name] = lambda c=compiled: jax.block_until_ready(
            c(state, data)
        )
    return interleaved(functions, repeats)


def _import_torch_compiler_first():
    # `torch.optim.AdamW()` imports torch._dynamo (and triton) on first
    # use; doing that after TensorFlow or XLA loaded crashed the process.
    import torch._dynamo  # noqa: F401


def main():
    args = parse_args()
    _import_torch_compiler_first()
    # First: the package's CPU kernel defaults (XLA flags, TensorFlow's
    # oneDNN) apply before Keras loads the backend. Imported after Keras,
    # TensorFlow ran on Eigen on an AVX2 CPU: one block's attention took
    # 90-96 ms instead of 40 ms.
    import keras_superclass  # noqa: F401, I001
    import keras

    backend = keras.backend.backend()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    result = {"backend": backend}
    attention_sizes = (2, 17, 2, 8) if args.small else (16, 197, 6, 64)
    width, vocab = (32, 1024) if args.small else (384, 49408)
    layers = 2 if args.small else 12
    shapes = [(width, 3 * width), (width, width)] * layers
    shapes += [(width, 4 * width), (4 * width, width)] * layers
    shapes += [(width, vocab), (vocab,), (width,)]
    if "attention" in parts:
        result["attention_fwd_bwd_ms"] = attention_part(
            attention_sizes, args.repeats
        )
    if "optimizer" in parts:
        result["adamw_update_ms"] = optimizer_part(shapes, args.repeats)
    if "mlp" in parts:
        # S/16 at 224 px, batch 16: 16 x 197 token rows.
        mlp_sizes = (34, 32, 128) if args.small else (16 * 197, 384, 1536)
        mlp_ms, mlp_gflops = mlp_part(mlp_sizes, args.repeats)
        result["mlp_fwd_bwd_ms"] = mlp_ms
        result["mlp_matmul_gflops"] = mlp_gflops
    if "xla" in parts and backend == "jax":
        result["jax_train_step_ms"] = xla_part(args.small, args.repeats)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
