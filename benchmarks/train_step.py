"""Times one SuperClass training step against a reference PyTorch step.

Runs, in one process so the ratios share the machine's load:

1. a large float32 matmul (PyTorch, else NumPy): the practical FLOP/s
   ceiling of the machine;
2. our `SuperClassClassifier` (default compile: AdamW, `SuperClassLoss`
   with online IDF, token metrics) on the current Keras backend, timed with
   `train_on_batch` after warm-up steps;
3. a reference-style PyTorch step: OpenCLIP's `VisionTransformer` (avg
   pooling, no projection) + LayerNorm/Linear head, the x-cls/superclass
   `ClsLoss` formula with running `cap_fq` / `num_samples` buffers and
   `torch.optim.AdamW` (decay on ndim >= 2 only).

Usage:
    KERAS_BACKEND=jax python benchmarks/train_step.py --json
    python benchmarks/train_step.py --backend torch --steps 5
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        default=None,
        choices=("jax", "tensorflow", "torch"),
        help="Keras backend (default: $KERAS_BACKEND, else jax).",
    )
    parser.add_argument("--preset", default="superclass_vit_s16")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--vocabulary-size", type=int, default=49408)
    parser.add_argument("--steps", type=int, default=3, help="Timed steps.")
    parser.add_argument(
        "--warmup", type=int, default=2, help="Untimed steps first."
    )
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument(
        "--no-reference", action="store_true", help="Skip the PyTorch step."
    )
    parser.add_argument(
        "--reference-only",
        action="store_true",
        help=argparse.SUPPRESS,  # Internal: the PyTorch side, own process.
    )
    parser.add_argument("--reference-config", help=argparse.SUPPRESS)
    parser.add_argument(
        "--json",
        action="store_true",
        help="Print one JSON object with the results as the last line.",
    )
    return parser.parse_args(argv)


def time_steps(step, warmup, steps):
    """Runs `step` warmup + steps times; returns the timed seconds."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def matmul_flops(size):
    """Best-of-3 FLOP/s of a float32 `size^3` matmul."""
    try:
        import torch

        a = torch.randn(size, size)
        b = torch.randn(size, size)

        def run():
            torch.matmul(a, b)

    except ImportError:
        import numpy as np

        rng = np.random.default_rng(0)
        a = rng.standard_normal((size, size), dtype="float32")
        b = rng.standard_normal((size, size), dtype="float32")

        def run():
            a @ b

    best = min(time_steps(run, 1, 3))
    return 2.0 * size**3 / best


def vit_train_flops(config, image_size, vocabulary_size, batch_size):
    """Analytic FLOPs of one step: 3x the forward (matmuls only)."""
    width = config["hidden_dim"]
    mlp = config["mlp_dim"]
    patch = config["patch_size"]
    layers = config["num_layers"]
    patches = (image_size // patch) ** 2
    tokens = patches + 1
    forward = 2 * patches * patch * patch * 3 * width  # patchify conv
    per_layer = 2 * tokens * width * 3 * width  # qkv
    per_layer += 2 * 2 * tokens * tokens * width  # q k^T and attn v
    per_layer += 2 * tokens * width * width  # out_proj
    per_layer += 2 * 2 * tokens * width * mlp  # c_fc and c_proj
    forward += layers * per_layer
    forward += 2 * width * vocabulary_size  # head
    return 3.0 * forward * batch_size


def make_batch(batch_size, image_size, vocabulary_size, seed=0):
    """Images and padded token ids `(B, 77)` (pad -1, ~20 tokens each)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.standard_normal(
        (batch_size, image_size, image_size, 3), dtype="float32"
    )
    ids = np.full((batch_size, 77), -1, dtype="int32")
    for i in range(batch_size):
        n = int(rng.integers(8, 32))
        ids[i, :n] = rng.integers(0, vocabulary_size, size=n)
    return images, ids


def keras_step(args):
    """Our model's `train_on_batch` closure and the preset's config."""
    from keras_superclass.models import SuperClassClassifier

    model = SuperClassClassifier.from_preset(
        args.preset,
        vocabulary_size=args.vocabulary_size,
        image_shape=(args.image_size, args.image_size, 3),
    )
    images, ids = make_batch(
        args.batch_size, args.image_size, args.vocabulary_size
    )

    def step():
        model.train_on_batch(images, ids)

    return step


def preset_config(preset):
    from keras_superclass.models.superclass.superclass_presets import (
        backbone_presets,
    )

    return backbone_presets[preset]["backbone"]


def reference_step(args, config):
    """A reference-style PyTorch step (OpenCLIP ViT + head + ClsLoss)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    width = config["hidden_dim"]
    vocab = args.vocabulary_size

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = VisionTransformer(
                image_size=args.image_size,
                patch_size=config["patch_size"],
                width=width,
                layers=config["num_layers"],
                heads=config["num_heads"],
                mlp_ratio=config["mlp_dim"] / width,
                output_dim=width,
                pool_type="avg",
            )
            self.visual.proj = None  # SuperClass: embed_dim=0, no proj
            self.ln_mlp = torch.nn.LayerNorm(width)
            self.text_projection = torch.nn.Linear(width, vocab)
            self.register_buffer(
                "cap_fq", torch.zeros(1, vocab, dtype=torch.float64)
            )
            self.register_buffer(
                "num_samples", torch.zeros(1, 1, dtype=torch.float64)
            )

        def forward(self, x):
            return self.text_projection(self.ln_mlp(self.visual(x)))

    model = Classifier().train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": 0.2},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=5e-4,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    images, ids = make_batch(args.batch_size, args.image_size, vocab)
    images = torch.from_numpy(
        np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    )
    # The reference scatters the raw token sequence (pad id 0).
    labels = torch.from_numpy(np.where(ids < 0, 0, ids).astype("int64"))

    def cls_loss(logits, labels):
        batch, classes = logits.shape
        targets = torch.zeros(batch, classes, dtype=torch.float32)
        targets.scatter_(dim=1, index=labels, value=1.0)
        model.cap_fq += targets.sum(dim=0, keepdim=True) / batch
        model.num_samples += 1
        weights = torch.log(
            (model.num_samples + 1.0 / batch) / (model.cap_fq + 1.0 / batch)
        ).to(targets.dtype)
        targets = F.normalize(targets * weights, p=1, dim=1)
        return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = cls_loss(model(images), labels)
        loss.backward()
        optimizer.step()

    return step


def run_reference(args, config):
    """The matmul and the reference step in a fresh process.

    PyTorch, JAX and TensorFlow each bring their own OpenMP / oneDNN
    runtimes; training PyTorch after another framework ran in the same
    process can crash, so the PyTorch side runs in a child process.
    """
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--reference-only",
        "--preset",
        args.preset,
        "--batch-size",
        str(args.batch_size),
        "--image-size",
        str(args.image_size),
        "--vocabulary-size",
        str(args.vocabulary_size),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--matmul-size",
        str(args.matmul_size),
        "--reference-config",
        json.dumps(config),
    ]
    if args.no_reference:
        command.append("--no-reference")
    output = subprocess.run(
        command, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def reference_main(args):
    # Only PyTorch here: importing it after TensorFlow / JAX can crash.
    result = {"matmul_flops": matmul_flops(args.matmul_size)}
    if not args.no_reference:
        config = json.loads(args.reference_config)
        step = reference_step(args, config)
        result["times"] = time_steps(step, args.warmup, args.steps)
    print(json.dumps(result))
    return 0


def main(argv=None):
    args = parse_args(argv)
    backend = args.backend or os.environ.get("KERAS_BACKEND", "jax")
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
    if args.reference_only:
        return reference_main(args)

    config = preset_config(args.preset)
    reference = run_reference(args, config)
    peak = reference["matmul_flops"]
    print(f"matmul {args.matmul_size}^3 fp32: {peak / 1e9:.1f} GFLOP/s")

    step = keras_step(args)
    flops = vit_train_flops(
        config, args.image_size, args.vocabulary_size, args.batch_size
    )
    times = time_steps(step, args.warmup, args.steps)
    ours = statistics.median(times)
    result = {
        "backend": backend,
        "preset": args.preset,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "vocabulary_size": args.vocabulary_size,
        "matmul_gflops": peak / 1e9,
        "step_gflop": flops / 1e9,
        "ms_per_step": 1e3 * ours,
        "step_times_ms": [round(1e3 * t, 1) for t in times],
        "images_per_second": args.batch_size / ours,
        "matmul_fraction": flops / ours / peak,
    }
    print(
        f"keras[{backend}] {args.preset} bs {args.batch_size}: "
        f"{1e3 * ours:.0f} ms/step, {args.batch_size / ours:.2f} img/s, "
        f"{flops / ours / 1e9:.1f} GFLOP/s = "
        f"{result['matmul_fraction']:.0%} of the matmul"
    )
    if not args.no_reference:
        ref_times = reference["times"]
        ref = statistics.median(ref_times)
        result.update(
            reference_ms_per_step=1e3 * ref,
            reference_step_times_ms=[round(1e3 * t, 1) for t in ref_times],
            reference_images_per_second=args.batch_size / ref,
            reference_matmul_fraction=flops / ref / peak,
            ratio_vs_reference=ref / ours,
        )
        print(
            f"reference pytorch: {1e3 * ref:.0f} ms/step, "
            f"{args.batch_size / ref:.2f} img/s, "
            f"{result['reference_matmul_fraction']:.0%} of the matmul; "
            f"ratio (reference / ours) {ref / ours:.2f}"
        )
    else:
        result.update(reference_ms_per_step=None, ratio_vs_reference=None)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
