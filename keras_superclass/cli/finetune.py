"""`keras-superclass finetune`: a pretrained encoder -> image classifier.

Builds a classifier on the encoder of `--preset`, fine-tunes it on the
labelled `--images` with the ViT fine-tuning recipe (layer-wise learning
rate decay, AdamW, warmup + cosine, label smoothing), prints the test
accuracy and writes the fine-tuned classifier as a preset to `--out`
(atomically; `finetune_results.json` inside holds the accuracy, the
per-epoch history and the class names).
"""

from keras_superclass.cli import add_overwrite_argument
from keras_superclass.cli import check_output_dir
from keras_superclass.cli import positive_int


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a pretrained encoder as an image classifier",
        description=__doc__,
    )
    parser.add_argument(
        "--preset",
        required=True,
        help="Pretrained preset directory (a task or a backbone, from "
        "export / save_to_preset) or an architecture name (random init).",
    )
    parser.add_argument(
        "--images",
        required=True,
        help="Training images: a folder of class subfolders, a labels "
        "table (CSV/TSV with file,label[,split]; files relative to the "
        "table) or labelled TFRecord shards.",
    )
    parser.add_argument(
        "--test",
        default=None,
        help="Test images, same layouts; default: the --test-split rows of "
        "the labels table --images.",
    )
    parser.add_argument("--out", required=True, help="Preset directory.")
    parser.add_argument(
        "--train-split",
        default="train",
        help="With a labels table (file,label,split): the training rows.",
    )
    parser.add_argument(
        "--test-split",
        default="test",
        help="With a labels table (file,label,split): the test rows.",
    )
    parser.add_argument(
        "--label-feature",
        default="label",
        help="Integer label feature of labelled shards.",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=10,
        help="Passes over the images.",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="Images per step."
    )
    parser.add_argument(
        "--learning-rate", type=float, default=1e-3, help="Peak head rate."
    )
    parser.add_argument(
        "--layer-decay",
        type=float,
        default=0.75,
        help="Layer-wise rate decay (1.0 turns it off).",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=0.05,
        help="AdamW's decoupled weight decay (none on 1-D weights).",
    )
    parser.add_argument(
        "--label-smoothing",
        type=float,
        default=0.1,
        help="Label smoothing of the cross-entropy.",
    )
    parser.add_argument(
        "--warmup-epochs",
        type=float,
        default=1.0,
        help="Linear warmup, then cosine decay.",
    )
    parser.add_argument(
        "--dropout", type=float, default=0.0, help="Dropout before the head."
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="Classes (default: from the data).",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="Square input size (default: the encoder's).",
    )
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="Random initialisation of the same architecture (baseline).",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Initialisation, shuffling and augmentation seed.",
    )
    parser.add_argument("--quiet", action="store_true", help="No progress bar.")
    add_overwrite_argument(parser)
    parser.set_defaults(func=run)
    return parser


def run(args):
    from keras_superclass.training.finetune import finetune

    check_output_dir(args.out, args.overwrite)
    _, results = finetune(
        args.preset,
        args.images,
        test=args.test,
        out=args.out,
        from_scratch=args.from_scratch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        layer_decay=args.layer_decay,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        warmup_epochs=args.warmup_epochs,
        dropout=args.dropout,
        num_classes=args.num_classes,
        image_size=args.image_size,
        label_feature=args.label_feature,
        train_split=args.train_split,
        test_split=args.test_split,
        seed=args.seed,
        verbose=0 if args.quiet else 1,
    )
    print(
        f"test accuracy: {results['accuracy']:.4f} "
        f"({results['num_classes']} classes, "
        f"{results['train_examples']} training images)"
    )
    print(f"Wrote the fine-tuned preset to {args.out}")
    return 0
