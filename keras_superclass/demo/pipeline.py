"""The one-command demo: data -> pretraining -> probe -> report.

1. Writes the embedded demo dataset (captioned 64x64 shape scenes) as
   TFRecord shards.
2. Builds a word-level vocabulary from the training captions.
3. Pretrains a tiny SuperClass ViT on the captions (`configs/demo_tiny`).
4. Linear-probes the pretrained encoder AND the same encoder with random
   initialisation on the held-out split's shape and colour labels.
5. Writes `report.md`, `results.json` and PNG plots.
"""

import glob
import json
import os
import time

import keras
import numpy as np

from keras_superclass.demo.report import StepLossRecorder
from keras_superclass.demo.report import write_report
from keras_superclass.training.builders import build_backbone
from keras_superclass.training.config import load_config
from keras_superclass.training.trainer import train
from keras_superclass.utils.io import atomic_write_json

PROBE_LABELS = ("label_shape", "label_color")


def _probe(encoder, out_dir, probe_epochs, verbose):
    """Linear-probe accuracy per attribute of a frozen encoder."""
    from keras_superclass.data import labelled_image_dataset
    from keras_superclass.evaluation.features import extract_features
    from keras_superclass.evaluation.linear_probe import linear_probe

    image_size = encoder.input_shape[1]
    accuracies = {}
    for feature in PROBE_LABELS:
        splits = {}
        for split in ("train", "test"):
            dataset, class_names = labelled_image_dataset(
                os.path.join(out_dir, "shards", split),
                image_size=image_size,
                batch_size=256,
                label_feature=feature,
            )
            splits[split] = extract_features(encoder, dataset, verbose=0)
        top1, _ = linear_probe(
            *splits["train"],
            *splits["test"],
            epochs=probe_epochs,
            seed=0,
            verbose=verbose,
        )
        accuracies[feature] = float(top1)
    return accuracies


def prepare_demo_data(out_dir, num_train=3072, num_test=768, seed=0, stages=2):
    """Writes what the tiny configs read, under `out_dir`.

    Its two stages are announced as `[1/stages]` and `[2/stages]` (the
    whole demo has five).

    `shards/{train,test}` (the demo dataset), `tokenizer/` (a word
    vocabulary of the training captions, for `demo_tiny` and
    `cls_crunet_tiny`) and `synset_vocabulary.json` (its WordNet synsets,
    for `catlip_tiny`; skipped with a note when WordNet is missing).

    Returns:
        `(tokenizer_dir, synset_vocabulary_path or None)`.
    """
    from keras_superclass.data import write_demo_dataset
    from keras_superclass.data.document_frequency import iter_captions
    from keras_superclass.data.tokenizers import train_tokenizer

    os.makedirs(out_dir, exist_ok=True)
    shard_dir = os.path.join(out_dir, "shards")
    if not glob.glob(os.path.join(shard_dir, "test", "*.tfrecord")):
        print(f"[1/{stages}] Writing the demo dataset to {shard_dir}")
        write_demo_dataset(
            shard_dir, num_train=num_train, num_test=num_test, seed=seed
        )
    train_glob = os.path.join(shard_dir, "train", "*.tfrecord")

    print(
        f"[2/{stages}] Building the word and synset vocabularies from the "
        f"training captions"
    )
    tokenizer = train_tokenizer(
        "word", iter_captions(train_glob), vocabulary_size=1000, min_count=2
    )
    tokenizer_dir = os.path.join(out_dir, "tokenizer")
    tokenizer.save_to_preset(tokenizer_dir)
    from keras_superclass.data import synsets

    try:
        synsets.check_wordnet()
    except RuntimeError as error:
        print(f"No synset vocabulary (catlip_tiny needs one): {error}")
        return tokenizer_dir, None
    vocabulary = synsets.build_synset_vocabulary(
        iter_captions(train_glob), min_count=2, workers=1, show_progress=False
    )
    synset_path = os.path.join(out_dir, "synset_vocabulary.json")
    vocabulary.save(synset_path)
    return tokenizer_dir, synset_path


def run_demo(
    out_dir="demo_output",
    num_train=3072,
    num_test=768,
    total_steps=None,
    probe_epochs=30,
    seed=0,
    overrides=(),
    verbose="auto",
):
    """Runs the whole demo and returns the results dict.

    Args:
        out_dir: where shards, the run, plots and the report go.
        num_train: training scenes (pretraining and probe training).
        num_test: held-out scenes (probe test split).
        total_steps: pretraining steps (default: the config's).
        probe_epochs: linear-probe epochs.
        seed: dataset and model seed.
        overrides: extra `section.key=value` config overrides.
        verbose: progress-bar verbosity.
    """
    start = time.time()
    out_dir = os.path.abspath(out_dir)
    keras.utils.set_random_seed(seed)
    shard_dir = os.path.join(out_dir, "shards")
    train_glob = os.path.join(shard_dir, "train", "*.tfrecord")
    tokenizer_dir = prepare_demo_data(
        out_dir, num_train, num_test, seed, stages=5
    )[0]

    print("[3/5] Pretraining a tiny SuperClass ViT")
    run_dir = os.path.join(out_dir, "run")
    if os.path.isdir(run_dir):
        import shutil

        shutil.rmtree(run_dir)  # the demo always starts afresh
    config_overrides = [
        f"data.train={train_glob}",
        f"data.tokenizer={tokenizer_dir}",
        f"data.seed={seed}",
        f"checkpoint.dir={run_dir}",
    ]
    if total_steps:
        config_overrides.append(f"training.total_steps={total_steps}")
    config = load_config(
        "demo_tiny", overrides=config_overrides + list(overrides)
    )
    recorder = StepLossRecorder()
    train_start = time.time()
    model, _ = train(config, callbacks=[recorder], verbose=verbose)
    train_seconds = time.time() - train_start

    print("[4/5] Linear probes: pretrained vs random-initialised encoder")
    pretrained = _probe(model.backbone, out_dir, probe_epochs, verbose=0)
    keras.utils.set_random_seed(seed + 1)
    random_encoder = build_backbone(
        config["model"]["preset"], config["model"]["backbone"]
    )
    random = _probe(random_encoder, out_dir, probe_epochs, verbose=0)

    print("[5/5] Writing the report")
    results = {
        "backend": keras.config.backend(),
        "probe_accuracy_pretrained": float(np.mean(list(pretrained.values()))),
        "probe_accuracy_random": float(np.mean(list(random.values()))),
        "probe_pretrained": pretrained,
        "probe_random": random,
        "pretraining_steps": config["training"]["total_steps"],
        "batch_size": config["training"]["global_batch_size"],
        "num_train": num_train,
        "num_test": num_test,
        "final_loss": recorder.losses[-1] if recorder.losses else None,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": None,
        "vocabulary_size": model.vocabulary_size,
    }
    report_path = write_report(
        out_dir, results, recorder.losses, model, shard_dir
    )
    results["total_seconds"] = round(time.time() - start, 1)
    atomic_write_json(os.path.join(out_dir, "results.json"), results)
    print(json.dumps({k: results[k] for k in list(results)[:3]}))
    print(f"Report: {report_path}")
    return results
