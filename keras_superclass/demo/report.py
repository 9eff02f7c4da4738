"""Plots and the Markdown report of the demo."""

import os

import keras
import numpy as np

from keras_superclass.utils.io import atomic_path
from keras_superclass.utils.io import atomic_write_text


class StepLossRecorder(keras.callbacks.Callback):
    """Records the loss of every training step.

    Keras logs the running mean of the epoch; the step's own loss follows
    from two consecutive means: `l_k = k m_k - (k - 1) m_{k-1}`.
    """

    def __init__(self):
        super().__init__()
        self.losses = []
        self._previous_mean = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._previous_mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = float((logs or {}).get("loss", np.nan))
        k = batch + 1
        self.losses.append(k * mean - (k - 1) * self._previous_mean)
        self._previous_mean = mean


def _save_figure(figure, path):
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_loss_curve(losses, path):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(1, len(losses) + 1)
    axis.plot(steps, losses, alpha=0.35, label="step loss")
    window = max(1, len(losses) // 30)
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1 :], smooth, label=f"mean of {window}")
    axis.set_xlabel("training step")
    axis.set_ylabel("SuperClass loss")
    axis.set_title("Pretraining loss")
    axis.legend()
    _save_figure(figure, path)


def plot_probe_accuracies(results, path):
    import matplotlib.pyplot as plt

    names = list(results["probe_pretrained"])
    x = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for offset, key, label in (
        (-0.2, "probe_random", "random init"),
        (0.2, "probe_pretrained", "SuperClass pretrained"),
    ):
        values = [results[key][n] for n in names]
        bars = axis.bar(x + offset, values, width=0.4, label=label)
        axis.bar_label(bars, fmt="%.2f")
    axis.set_xticks(x, [n.replace("label_", "") for n in names])
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("linear-probe accuracy (test)")
    axis.set_title("Frozen-encoder linear probe")
    axis.legend(loc="lower right")
    _save_figure(figure, path)


def plot_prediction_grid(model, shard_dir, path, count=12):
    import matplotlib.pyplot as plt

    from keras_superclass.data import image_text_dataset

    image_size = model.backbone.input_shape[1]
    # One pass over uint8 images: shown as they are, prepared to predict.
    dataset = image_text_dataset(
        os.path.join(shard_dir, "test"),
        batch_size=count,
        image_size=image_size,
        training=False,
        normalize=False,
        deterministic=True,
        seed=0,
    )
    pixels, captions = next(iter(dataset))
    predictions = model.predict_labels(np.asarray(pixels), top_k=3)
    columns = 4
    rows = int(np.ceil(count / columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(3 * columns, 3.3 * rows)
    )
    for i, axis in enumerate(np.ravel(axes)):
        axis.axis("off")
        if i >= len(predictions):
            continue
        axis.imshow(np.asarray(pixels[i]).astype("uint8"))
        words = ", ".join(
            f"{p['label']} {p['score']:.2f}" for p in predictions[i]
        )
        caption = captions[i].numpy().decode("utf-8")
        axis.set_title(f"{words}\n({caption[:34]})", fontsize=8)
    figure.suptitle("Top predicted tokens (caption in brackets)")
    _save_figure(figure, path)
    return predictions


def write_report(out_dir, results, losses, model, shard_dir):
    """Writes the plots and `report.md`; returns the report's path."""
    plot_loss_curve(losses, os.path.join(out_dir, "loss_curve.png"))
    plot_probe_accuracies(results, os.path.join(out_dir, "probe_accuracy.png"))
    plot_prediction_grid(
        model, shard_dir, os.path.join(out_dir, "predictions.png")
    )
    rows = "\n".join(
        f"| {name.replace('label_', '')} | "
        f"{results['probe_random'][name]:.3f} | "
        f"{results['probe_pretrained'][name]:.3f} |"
        for name in results["probe_pretrained"]
    )
    gap = (
        results["probe_accuracy_pretrained"] - results["probe_accuracy_random"]
    )
    text = f"""# keras_superclass demo report

Backend: **{results["backend"]}**. A tiny SuperClass ViT was pretrained for
{results["pretraining_steps"]} steps (batch {results["batch_size"]}, \
{results["train_seconds"]} s) on {results["num_train"]} captioned shape
scenes, predicting the words of each caption (vocabulary of
{results["vocabulary_size"]}). Its frozen features were then linear-probed
on the {results["num_test"]} held-out scenes' shape and colour labels,
against the same encoder with random initialisation.

| probe target | random init | SuperClass pretrained |
|---|---|---|
{rows}
| **mean** | **{results["probe_accuracy_random"]:.3f}** | \
**{results["probe_accuracy_pretrained"]:.3f}** |

Pretraining improves the probe by **{100 * gap:.1f} points**.

![loss curve](loss_curve.png)

![probe accuracies](probe_accuracy.png)

![predictions](predictions.png)
"""
    path = os.path.join(out_dir, "report.md")
    atomic_write_text(path, text)
    return path
