"""The two timed sides of `train_step.py`, each run in its own process."""

import json
import os
import sys

from step_measure import imports_rss_mb
from step_measure import make_batch
from step_measure import report
from step_measure import timed
from step_measure import torch_device


def main_ours(args):
    """Our task's `train_on_batch` on the current Keras backend."""
    # First, as a script's first import: the package's CPU kernel defaults
    # (XLA flags, TensorFlow's oneDNN) apply before the frameworks load.
    import keras_superclass  # noqa: F401, I001
    import keras

    if args.dtype == "bfloat16":
        # What `training.dtype_policy: mixed_bfloat16` does; the loss and
        # the IDF statistics stay float32.
        keras.config.set_dtype_policy("mixed_bfloat16")
    from keras_superclass.layers.attention import fused_attention_is_faster
    from keras_superclass.models import SuperClassClassifier
    from keras_superclass.utils import cpu_memory
    from keras_superclass.utils import xla_flags

    # As `train` does: XLA:CPU's bf16 matmul kernels for a bf16 jax run.
    xla_flags.choose_cpu_matmuls(keras.config.dtype_policy().compute_dtype)
    # As `train` does: PyTorch on a CPU reuses the pages a step freed.
    keeps_freed_memory = cpu_memory.keep_freed_memory_for_training()

    imports_mb = imports_rss_mb()
    overrides = {"image_shape": (args.image_size, args.image_size, 3)}
    if args.num_layers:
        overrides["num_layers"] = args.num_layers
    if args.remat:
        overrides["remat"] = True
    model = SuperClassClassifier.from_preset(
        args.preset,
        vocabulary_size=args.vocabulary_size,
        preprocessor=None,  # no tokenizer: no TensorFlow needed
        compile=False,
        **overrides,
    )
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    model.compile(jit_compile=jit)
    images, ids = make_batch(
        args.batch_size, args.image_size, args.vocabulary_size
    )
    # On the device once, as a prefetching input pipeline delivers them.
    images = keras.ops.convert_to_tensor(images)
    ids = keras.ops.convert_to_tensor(ids)

    def step():
        model.train_on_batch(images, ids)

    def sync():
        # jax runs the step asynchronously, and Keras's logs keep a failed
        # step's values unconverted (no error): reading the step counter
        # waits for the step and raises if it failed.
        keras.ops.convert_to_numpy(model.optimizer.iterations)

    backend = keras.backend.backend()
    torch_cuda = False
    if backend == "torch":
        import torch

        torch_cuda = torch.cuda.is_available()
        if torch_cuda:
            torch.cuda.reset_peak_memory_stats()
    times, monitor = timed(step, sync, args)
    peak_device = None
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            peak_device = round(stats["peak_bytes_in_use"] / 2**20, 1)
    elif torch_cuda:
        peak_device = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    setup = {
        "keras": keras.__version__,
        "framework": _framework_version(backend),
        "jit_compile": bool(model.jit_compile),
        "dtype_policy": model.dtype_policy.name,
        "remat": bool(args.remat),
        "attention": "fused"
        if fused_attention_is_faster()
        else "explicit (layers/attention.py)",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "keeps_freed_memory": keeps_freed_memory,
        "other_frameworks": "blocked"
        if args.own_framework_only
        else "importable",
        "frameworks_loaded": sorted(
            name
            for name in ("jax", "tensorflow", "torch")
            if sys.modules.get(name) is not None
        ),
    }
    return report(times, monitor, setup, peak_device, imports_mb)


def _framework_version(backend):
    module = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}
    return f"{backend} {__import__(module[backend]).__version__}"


def main_reference(args):
    """The reference-style PyTorch step (OpenCLIP ViT + head + ClsLoss)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    try:
        from open_clip.transformer import VisionTransformer
    except ImportError as error:
        raise SystemExit(
            "The reference side needs open_clip_torch (`pip install "
            "open_clip_torch`), or pass --no-reference."
        ) from error
    imports_mb = imports_rss_mb()

    config = _backbone_config(args)
    device = torch_device(args)
    torch.manual_seed(0)
    width, vocab = config["hidden_dim"], args.vocabulary_size

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

    model = Classifier().to(device).train()
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
    compiled = args.reference_compile == "on" or (
        args.reference_compile == "auto" and device == "cuda"
    )
    forward = torch.compile(model) if compiled else model
    images, ids = make_batch(args.batch_size, args.image_size, vocab)
    images = torch.from_numpy(
        np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    ).to(device)
    # The reference scatters the raw token sequence (pad id 0).
    labels = torch.from_numpy(np.where(ids < 0, 0, ids).astype("int64"))
    labels = labels.to(device)

    def cls_loss(logits, labels):
        batch, classes = logits.shape
        targets = torch.zeros(
            batch, classes, dtype=torch.float32, device=device
        )
        targets.scatter_(dim=1, index=labels, value=1.0)
        model.cap_fq += targets.sum(dim=0, keepdim=True) / batch
        model.num_samples += 1
        weights = torch.log(
            (model.num_samples + 1.0 / batch) / (model.cap_fq + 1.0 / batch)
        ).to(targets.dtype)
        targets = F.normalize(targets * weights, p=1, dim=1)
        return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()

    autocast = args.dtype == "bfloat16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, torch.bfloat16, enabled=autocast):
            loss = cls_loss(forward(images), labels)
        loss.backward()
        optimizer.step()

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, monitor = timed(step, sync, args)
    peak_device = None
    if cuda:
        peak_device = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    setup = {
        "torch": torch.__version__,
        "device": device,
        "autocast_bfloat16": autocast,
        "torch_compile": compiled,
        "threads": torch.get_num_threads(),
    }
    return report(times, monitor, setup, peak_device, imports_mb)


def _backbone_config(args):
    from train_step import backbone_config

    return backbone_config(args)


if __name__ == "__main__":
    raise SystemExit(json.dumps({"error": "run train_step.py instead"}))
