"""Training throughput of CRU-Net-56 vs ResNeXt-50 (32x4d) on this machine.

Measures forward + backward (+ a plain SGD update) images per second of the
two 1000-way classifiers at 224x224 for the current `KERAS_BACKEND`. The
ResNeXt-50 is the same network with every stage made of pre-activation
ResNeXt units (`cru_dims=[0, 0, 0, 0]`), so the comparison isolates the
Collective Residual Units. Timed steps alternate between the two models so
that machine noise hits both alike; the ratio is the figure to compare.

`--kernels compare` times CRU-Net-56 with the backend's own grouped,
depthwise and 1x1 convolution and BatchNorm kernels against the forms the
package uses under XLA on a CPU (`keras_superclass/layers/convolutions.py`:
plain convolutions per group, one multiply-add per depthwise tap, 1x1 as a
matmul; `batch_normalization.py`: BatchNorm's sums as matmuls under jax),
alternating the two.

Usage:
    KERAS_BACKEND=jax python benchmarks/crunet_throughput.py [--json]
    KERAS_BACKEND=jax python benchmarks/crunet_throughput.py \
        --kernels compare
"""

import argparse
import json
import os
import statistics
import sys
import time

# Benchmark this checkout, not another installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from train_step import cpu_info  # noqa: E402

from keras_superclass.layers.xla_cpu_forms import forced_kernels  # noqa: E402
from keras_superclass.models.crunet import CRUNetImageClassifier  # noqa: E402

# name: (backbone overrides, forced kernels: None = the package's choice)
MODELS = {
    "crunet56": ({}, None),
    "resnext50_32x4d": ({"cru_dims": [0, 0, 0, 0]}, None),
}
KERNELS = {
    "xla_cpu_forms": ({}, False),
    "native_kernels": ({}, True),
}


def build(preset, overrides, image_size, num_classes):
    model = CRUNetImageClassifier.from_preset(
        preset,
        num_classes=num_classes,
        image_shape=(image_size, image_size, 3),
        compile=False,
        **overrides,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument(
        "--preset", default="crunet56", help="CRU-Net preset to build"
    )
    parser.add_argument(
        "--kernels",
        choices=("auto", "native", "compare"),
        default="auto",
        help="auto: the package's choice for this backend and device; "
        "native: the backend's own convolution and BatchNorm kernels; "
        "compare: CRU-Net with both",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON line last"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1, --warmup >= 0.")

    rng = np.random.default_rng(0)
    size = args.image_size
    images = rng.normal(size=(args.batch_size, size, size, 3))
    images = images.astype("float32")
    labels = rng.integers(0, args.num_classes, size=(args.batch_size,))

    variants = dict(MODELS)
    if args.kernels == "native":
        variants = {name: (o, True) for name, (o, _) in MODELS.items()}
    elif args.kernels == "compare":
        variants = dict(KERNELS)

    def step(name):
        _, native = variants[name]
        if native is None:
            return models[name].train_on_batch(images, labels)
        # Read at trace (jax, tensorflow) and at every call (torch eager).
        with forced_kernels(native):
            return models[name].train_on_batch(images, labels)

    keras.utils.set_random_seed(0)
    models, setup = {}, {}
    for name, (overrides, _) in variants.items():
        start = time.perf_counter()
        models[name] = build(args.preset, overrides, size, args.num_classes)
        model = models[name]
        for _ in range(max(1, args.warmup)):  # first step compiles
            step(name)
        setup[name] = time.perf_counter() - start
        print(
            f"{name}: {trainable_count(model):,} trainable parameters, "
            f"build + {max(1, args.warmup)} warm-up step(s) "
            f"{setup[name]:.1f} s",
            flush=True,
        )

    times = {name: [] for name in models}
    for _ in range(args.steps):
        for name in models:
            start = time.perf_counter()
            step(name)
            times[name].append(time.perf_counter() - start)
            print(f"  {name}: step {times[name][-1]:.2f} s", flush=True)

    backend = keras.backend.backend()
    print(
        f"\nbackend {backend}, batch {args.batch_size}, {size}x{size}, "
        f"{args.steps} timed step(s) per model (median)"
    )
    result = {
        "backend": backend,
        "preset": args.preset,
        "kernels": args.kernels,
        **cpu_info(),
        "batch_size": args.batch_size,
        "image_size": size,
        "steps": args.steps,
    }
    for name, values in times.items():
        step = statistics.median(values)
        rate = args.batch_size / step
        print(f"  {name:>16}: {step:7.3f} s/step  {rate:7.2f} images/s")
        result[name] = {
            "parameters": trainable_count(models[name]),
            "seconds_per_step": step,
            "images_per_second": rate,
            "setup_seconds": setup[name],
        }
    first, second = list(variants)
    ratio = (
        result[first]["images_per_second"] / result[second]["images_per_second"]
    )
    result[f"throughput_ratio_{first}_over_{second}"] = ratio
    print(f"  {first} / {second} throughput: {ratio:.3f}x")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
