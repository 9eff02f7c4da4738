"""SuperClass vs CLIP at equal compute on the demo data, in one run.

1. Pretrains the same tiny ViT (demo_tiny's encoder) twice with the same
   batch, steps and schedule: with the SuperClass loss on caption words
   (`demo_tiny`), and as CLIP with a small text tower (`clip_tiny`).
   The median train-step time of each is measured (compile steps aside).
2. Linear-probes both frozen encoders on shape and colour.
3. Zero-shot shape and colour accuracy with OpenAI's 80 prompt templates:
   CLIP directly; SuperClass after LiT (its encoder locked but a new
   projection, the same text tower trained for the same steps).
4. Writes `comparison.json`, `comparison.md` (the table) and
   `comparison.png` (the plot) to `--out`.

    KERAS_BACKEND=jax python examples/superclass_vs_clip.py --out cmp
"""

import argparse
import json
import os
import time

import keras
import numpy as np

from keras_superclass.cli import positive_int
from keras_superclass.demo.pipeline import PROBE_LABELS
from keras_superclass.demo.pipeline import _probe
from keras_superclass.demo.pipeline import prepare_demo_data
from keras_superclass.demo.report import _save_figure
from keras_superclass.evaluation.zero_shot import zero_shot_classify
from keras_superclass.training.config import load_config
from keras_superclass.training.export import export_preset
from keras_superclass.training.trainer import train
from keras_superclass.utils.io import atomic_write_json
from keras_superclass.utils.io import atomic_write_text


class StepTimer(keras.callbacks.Callback):
    """Wall time of each training batch (`fit` syncs after every step)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)

    def median(self, skip=10):
        """Median step time, the first `skip` (compiling) steps aside."""
        return float(np.median(self.times[skip:] or self.times))


def run(config_name, overrides):
    config = load_config(config_name, overrides=overrides)
    timer = StepTimer()
    model, _ = train(config, callbacks=[timer], verbose=2)
    return model, config, timer.median()


def zero_shot(model, shard_dir):
    return {
        label: zero_shot_classify(
            model, os.path.join(shard_dir, "test"), label_feature=label
        )["top1"]
        for label in PROBE_LABELS
    }


def write_table(results, path):
    rows = [
        "| model | step time (s) | shape probe | colour probe | "
        "shape zero-shot | colour zero-shot |",
        "|---|---|---|---|---|---|",
    ]
    for name, title in (
        ("superclass", "SuperClass (+ LiT for zero-shot)"),
        ("clip", "CLIP"),
    ):
        r = results[name]
        rows.append(
            f"| {title} | {r['step_seconds']:.3f} | "
            f"{r['probe']['label_shape']:.3f} | "
            f"{r['probe']['label_color']:.3f} | "
            f"{r['zero_shot']['label_shape']:.3f} | "
            f"{r['zero_shot']['label_color']:.3f} |"
        )
    atomic_write_text(path, "\n".join(rows) + "\n")
    return "\n".join(rows)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        ("probe", "label_shape", "shape probe"),
        ("probe", "label_color", "colour probe"),
        ("zero_shot", "label_shape", "shape zero-shot"),
        ("zero_shot", "label_color", "colour zero-shot"),
    ]
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 1]}
    )
    x = np.arange(len(metrics))
    for offset, name in ((-0.2, "superclass"), (0.2, "clip")):
        values = [results[name][a][b] for a, b, _ in metrics]
        left.bar(x + offset, values, 0.4, label=name)
    for chance, start in ((1 / 5, 0), (1 / 6, 1)):
        left.hlines(chance, start - 0.4, start + 0.4, colors="k", ls=":")
        left.hlines(chance, start + 1.6, start + 2.4, colors="k", ls=":")
    left.set_xticks(x, [m[2] for m in metrics])
    left.set_ylim(0, 1)
    left.set_ylabel("test accuracy (dotted: chance)")
    left.legend()
    names = ["superclass", "clip"]
    right.bar(names, [results[n]["step_seconds"] for n in names])
    right.set_ylabel("train step (s)")
    figure.suptitle(
        f"Demo data, {results['steps']} steps at batch {results['batch']} "
        f"({results['backend']})"
    )
    _save_figure(figure, path)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", default="clip_comparison", help="output folder"
    )
    parser.add_argument(
        "--num-train", type=int, default=2048, help="training images"
    )
    parser.add_argument("--num-test", type=int, default=512, help="test images")
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=300,
        help="pretraining steps of each model",
    )
    parser.add_argument(
        "--probe-epochs",
        type=positive_int,
        default=30,
        help="linear-probe epochs",
    )
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    start = time.time()
    tokenizer_dir = prepare_demo_data(out, args.num_train, args.num_test)[0]
    shard_dir = os.path.join(out, "shards")
    budget = [
        f"data.train={os.path.join(shard_dir, 'train', '*.tfrecord')}",
        f"training.total_steps={args.steps}",
        f"training.steps_per_epoch={args.steps}",
    ]
    results = {"backend": keras.config.backend(), "steps": args.steps}

    superclass, config, step = run(
        "demo_tiny",
        budget
        + [
            f"data.tokenizer={tokenizer_dir}",
            f"checkpoint.dir={os.path.join(out, 'run_superclass')}",
        ],
    )
    results["batch"] = config["training"]["global_batch_size"]
    results["superclass"] = {
        "step_seconds": step,
        "probe": _probe(superclass.backbone, out, args.probe_epochs, 0),
    }
    encoder = export_preset(superclass, config, os.path.join(out, "encoder"))

    clip, _, step = run(
        "clip_tiny",
        budget + [f"checkpoint.dir={os.path.join(out, 'run_clip')}"],
    )
    results["clip"] = {
        "step_seconds": step,
        "probe": _probe(clip.backbone, out, args.probe_epochs, 0),
        "zero_shot": zero_shot(clip, shard_dir),
    }

    # LiT: the same text tower and steps as CLIP's, the encoder locked.
    lit, _, step = run(
        "lit_tiny",
        budget
        + [
            f"model.preset={encoder}",
            f"checkpoint.dir={os.path.join(out, 'run_lit')}",
        ],
    )
    results["superclass"]["zero_shot"] = zero_shot(lit, shard_dir)
    results["lit_step_seconds"] = step
    results["total_seconds"] = round(time.time() - start, 1)
    atomic_write_json(os.path.join(out, "comparison.json"), results)
    table = write_table(results, os.path.join(out, "comparison.md"))
    plot(results, os.path.join(out, "comparison.png"))
    print(table)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
