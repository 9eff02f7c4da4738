"""`keras-superclass probe`: evaluate a frozen image encoder.

Loads an encoder (a preset directory written by `save_to_preset`, of a
backbone or a task, or an architecture preset name), extracts features of
labelled train and test images and runs the linear probe, kNN and few-shot
protocols. Prints a Markdown table and writes `results.json` and
`results.md` to `--out`.
"""

import os


def _int_list(text):
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as error:
        raise ValueError(
            f"Expected comma-separated integers, got {text!r}."
        ) from error


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "probe",
        help="evaluate a frozen image encoder (linear probe, kNN, few-shot)",
        description=__doc__,
    )
    parser.add_argument(
        "--preset",
        required=True,
        help="Preset directory (backbone or task, from save_to_preset) or "
        "an architecture preset name (random weights).",
    )
    parser.add_argument(
        "--train",
        required=True,
        help="Labelled training images: a folder of class subfolders, a "
        "labels table (CSV/TSV with file,label[,split]; files relative to "
        "the table) or labelled TFRecord shards.",
    )
    parser.add_argument(
        "--test", required=True, help="Labelled test images, same layout."
    )
    parser.add_argument(
        "--train-split",
        default="train",
        help="With a labels table (file,label,split): the rows of --train.",
    )
    parser.add_argument(
        "--test-split",
        default="test",
        help="With a labels table (file,label,split): the rows of --test.",
    )
    parser.add_argument(
        "--protocols",
        default="linear_probe,knn,few_shot",
        help="Comma-separated subset of linear_probe,knn,few_shot.",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="Square input size; defaults to the encoder's image size "
        "(224 if it has none).",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="Images per batch for feature extraction.",
    )
    parser.add_argument(
        "--epochs", type=int, default=90, help="Linear-probe epochs."
    )
    parser.add_argument(
        "--probe-batch-size",
        type=int,
        default=256,
        help="Linear-probe batch size.",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=0.1,
        help="Linear-probe base rate per 256 examples.",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="Linear-probe weight decay.",
    )
    parser.add_argument(
        "--warmup-epochs",
        type=int,
        default=10,
        help="Linear-probe warmup epochs.",
    )
    parser.add_argument("--k", type=int, default=20, help="kNN neighbours.")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.07,
        help="kNN vote temperature.",
    )
    parser.add_argument(
        "--shots",
        type=_int_list,
        default=(1, 5, 10),
        help="Comma-separated few-shot sizes.",
    )
    parser.add_argument(
        "--seeds",
        type=_int_list,
        default=(0, 1, 2),
        help="Comma-separated few-shot seeds.",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="Linear-probe seed."
    )
    parser.add_argument(
        "--out", required=True, help="Folder for results.json/results.md."
    )
    parser.add_argument(
        "--verbose", action="store_true", help="Show progress bars."
    )
    parser.set_defaults(func=run)
    return parser


def load_encoder(preset, image_size=None):
    """Loads a backbone from a preset directory or an architecture name.

    With `image_size`, an encoder with a fixed, different input size is
    rebuilt for `(image_size, image_size, 3)` (the ViT resizes its position
    table).
    """
    import keras_hub

    import keras_superclass  # noqa: F401  (registers the classes)
    from keras_superclass.models import SuperClassBackbone

    preset = os.fspath(preset)
    override = {}
    if image_size is not None:
        override["image_shape"] = (image_size, image_size, 3)
    if os.path.exists(preset) or "://" in preset:
        if os.path.exists(preset) and not os.path.isdir(preset):
            raise ValueError(
                f"--preset {preset!r} is a file; pass the preset directory "
                "written by `save_to_preset()`."
            )
        encoder = keras_hub.models.Backbone.from_preset(preset)
        shape = getattr(encoder, "image_shape", None)
        if override and shape is not None and None not in tuple(shape)[:2]:
            if tuple(shape)[:2] != (image_size, image_size):
                encoder = keras_hub.models.Backbone.from_preset(
                    preset, **override
                )
        return encoder
    return SuperClassBackbone.from_preset(preset, **override)


def load_labelled_data(path, converter, batch_size, split=None):
    """`(batches, class_names or None)` of labelled images, prepared by
    `converter` (class folders, a labels table or labelled shards)."""
    from keras_superclass.data import labelled_image_dataset

    return labelled_image_dataset(
        path, batch_size=batch_size, image_converter=converter, split=split
    )


def run(args):
    from keras_superclass.evaluation import evaluate_encoder
    from keras_superclass.evaluation import format_results_table
    from keras_superclass.evaluation import write_results
    from keras_superclass.evaluation.results import check_protocols

    protocols = check_protocols(args.protocols)
    for name in ("train", "test"):
        path = getattr(args, name)
        if not any(c in path for c in "*?[") and not os.path.exists(path):
            raise FileNotFoundError(f"--{name} {path!r} does not exist.")
    from keras_superclass.data.labelled_files import check_separate_splits
    from keras_superclass.utils.presets import preset_image_converter

    check_separate_splits(
        args.train, args.test, args.train_split, args.test_split
    )

    encoder = load_encoder(args.preset, args.image_size)
    converter = preset_image_converter(args.preset, encoder, args.image_size)
    image_size = converter.image_size
    train, class_names = load_labelled_data(
        args.train, converter, args.batch_size, args.train_split
    )
    test, _ = load_labelled_data(
        args.test, converter, args.batch_size, args.test_split
    )
    results = evaluate_encoder(
        encoder,
        train,
        test,
        protocols=protocols,
        verbose=args.verbose,
        linear_probe_kwargs={
            "epochs": args.epochs,
            "batch_size": args.probe_batch_size,
            "learning_rate": args.learning_rate,
            "weight_decay": args.weight_decay,
            "warmup_epochs": args.warmup_epochs,
            "seed": args.seed,
            "verbose": 2 if args.verbose else 0,
        },
        knn_kwargs={"k": args.k, "temperature": args.temperature},
        few_shot_kwargs={"shots": args.shots, "seeds": args.seeds},
    )
    results.update(
        preset=os.fspath(args.preset),
        train=os.fspath(args.train),
        test=os.fspath(args.test),
        image_size=list(image_size),
    )
    if class_names is not None:
        results["class_names"] = class_names
    json_path, markdown_path = write_results(results, args.out)
    print(format_results_table(results))
    print(f"Wrote {json_path} and {markdown_path}")
    return 0
