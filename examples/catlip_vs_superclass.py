"""SuperClass vs CatLIP labels at the same budget, and Transfer Init.

On the embedded demo dataset:
1. builds a WordNet-synset vocabulary from the captions and writes shards
   holding both the captions and their synset ids;
2. pretrains the same tiny ViT twice with the same steps and batch: on
   caption tokens with the SuperClass loss, and on synsets with CatLIP's
   binary cross-entropy; linear-probes both (shape and colour labels);
3. trains a shape classifier on the frozen CatLIP features with 1%, 10%
   and 100% of the labelled training data, its weights initialised from
   the matching synset rows of the CatLIP head (Transfer Init) or randomly.

    KERAS_BACKEND=jax python examples/catlip_vs_superclass.py --out cmp
"""

import argparse
import json
import os

import keras
import numpy as np

from keras_superclass.cli import positive_int
from keras_superclass.data import labelled_image_dataset
from keras_superclass.data.demo_dataset import CLASS_NAMES
from keras_superclass.data.demo_dataset import DemoSource
from keras_superclass.data.document_frequency import iter_captions
from keras_superclass.data.shard_writer import write_shards
from keras_superclass.data.synsets import build_synset_vocabulary
from keras_superclass.data.synsets import synset_extra_features_fn
from keras_superclass.data.tokenizers import train_tokenizer
from keras_superclass.evaluation import extract_features
from keras_superclass.evaluation import linear_probe
from keras_superclass.evaluation.transfer_init import transfer_init_classifier
from keras_superclass.training.config import load_config
from keras_superclass.training.trainer import train
from keras_superclass.utils.io import atomic_write_json

ENCODER = [
    "model.preset=superclass_vit_ti16",
    "model.backbone.image_shape=[64, 64, 3]",
    "model.backbone.patch_size=8",
    "model.backbone.num_layers=4",
    "model.backbone.num_heads=4",
    "model.backbone.hidden_dim=128",
    "model.backbone.mlp_dim=256",
]


def write_data(out, num_train, num_test):
    shard_dir = os.path.join(out, "shards")
    plain = os.path.join(out, "plain")
    from keras_superclass.data import write_demo_dataset

    write_demo_dataset(plain, num_train=num_train, num_test=0, progress=False)
    vocabulary = build_synset_vocabulary(
        iter_captions(os.path.join(plain, "train")),
        min_count=5,
        workers=1,
        show_progress=False,
    )
    vocabulary.save(os.path.join(out, "synset_vocabulary.json"))
    for split, num in (("train", num_train), ("test", num_test)):
        write_shards(
            DemoSource(num, 0, split, 64, 512),
            os.path.join(shard_dir, split),
            prefix=split,
            extra_features_fn=synset_extra_features_fn(vocabulary),
            metadata={"class_names": CLASS_NAMES, "demo": True},
            progress=False,
        )
    return shard_dir, vocabulary


def probe(encoder, shard_dir):
    accuracies = {}
    for label in ("label_shape", "label_color"):
        splits = [
            extract_features(
                encoder,
                labelled_image_dataset(
                    os.path.join(shard_dir, split),
                    image_size=64,
                    batch_size=256,
                    label_feature=label,
                )[0],
            )
            for split in ("train", "test")
        ]
        accuracies[label] = linear_probe(*splits[0], *splits[1], epochs=30)[0]
    return accuracies


def head_features(model, shard_dir, split):
    """LayerNorm-ed pooled features: what the synset classifier reads."""
    features, labels = extract_features(
        model.backbone,
        labelled_image_dataset(
            os.path.join(shard_dir, split),
            image_size=64,
            batch_size=256,
            label_feature="label_shape",
        )[0],
    )
    normed = model.token_head.norm(features)
    return keras.ops.convert_to_numpy(normed), labels


def fit_classifier(kernel, bias, x, y, x_test, y_test, epochs=30):
    classifier = keras.Sequential([keras.layers.Dense(kernel.shape[1])])
    classifier.build((None, kernel.shape[0]))
    classifier.layers[0].set_weights([kernel, bias])
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    classifier.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return float(classifier.evaluate(x_test, y_test, verbose=0)[1])


def _epoch_length(steps):
    """About a third of `steps` that divides it (three logged epochs)."""
    return next(d for d in range(max(1, steps // 3), 0, -1) if steps % d == 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", default="catlip_comparison", help="output folder"
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
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    shard_dir, vocabulary = write_data(out, args.num_train, args.num_test)
    train_glob = os.path.join(shard_dir, "train", "*.tfrecord")
    tokenizer = train_tokenizer(
        "word", iter_captions(train_glob), vocabulary_size=1000, min_count=2
    )
    tokenizer.save_to_preset(os.path.join(out, "tokenizer"))
    budget = [
        f"training.total_steps={args.steps}",
        f"training.steps_per_epoch={_epoch_length(args.steps)}",
        f"data.train={train_glob}",
    ]
    runs = {
        "superclass": load_config(
            "demo_tiny",
            ENCODER
            + budget
            + [
                f"data.tokenizer={os.path.join(out, 'tokenizer')}",
                f"checkpoint.dir={os.path.join(out, 'run_superclass')}",
            ],
        ),
        "catlip": load_config(
            "catlip_tiny",
            ENCODER
            + budget
            + [
                "model.backbone.pooling=avg",
                "data.synset_vocabulary="
                + os.path.join(out, "synset_vocabulary.json"),
                f"checkpoint.dir={os.path.join(out, 'run_catlip')}",
            ],
        ),
    }
    results = {"backend": keras.config.backend(), "steps": args.steps}
    models = {}
    for name, config in runs.items():
        models[name], _ = train(config, verbose=2)
        results[f"probe_{name}"] = probe(models[name].backbone, shard_dir)

    catlip = models["catlip"]
    x, y = head_features(catlip, shard_dir, "train")
    x_test, y_test = head_features(catlip, shard_dir, "test")
    kernel, bias, report = transfer_init_classifier(
        catlip, CLASS_NAMES["label_shape"], vocabulary, seed=0
    )
    results["transfer_init_matches"] = {
        name: [m["lemma"] for m in entry["matches"]]
        for name, entry in zip(CLASS_NAMES["label_shape"], report)
    }
    rng = np.random.default_rng(0)
    random_kernel = rng.normal(0, x.shape[1] ** -0.5, kernel.shape)
    for fraction in (0.01, 0.1, 1.0):
        keep = rng.permutation(len(x))[: max(5, int(fraction * len(x)))]
        results[f"transfer_init_{fraction}"] = fit_classifier(
            kernel, bias, x[keep], y[keep], x_test, y_test
        )
        results[f"random_init_{fraction}"] = fit_classifier(
            random_kernel.astype("float32"),
            np.zeros_like(bias),
            x[keep],
            y[keep],
            x_test,
            y_test,
        )
    atomic_write_json(os.path.join(out, "comparison.json"), results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
