"""`keras-superclass predict`: top-k caption tokens or classes of images."""

import json


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "predict",
        help="print the top-k predicted tokens, synsets or classes of images",
        description="Load a trained task preset (with its tokenizer) or a "
        "fine-tuned classifier preset and print the k highest-scoring "
        "tokens (synsets for CatLIP, classes for a classifier) of each "
        "image.",
    )
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files to label"
    )
    parser.add_argument(
        "--preset",
        required=True,
        help="task preset directory (a pretrained SuperClass / CatLIP task "
        "or a fine-tuned classifier)",
    )
    parser.add_argument(
        "--top-k", type=int, default=10, help="labels per image (default: 10)"
    )
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per image"
    )
    parser.set_defaults(func=run)


def run(args):
    from keras_superclass.inference import predict_files

    predictions = predict_files(args.preset, args.images, top_k=args.top_k)
    for path, labels in zip(args.images, predictions):
        if args.json:
            record = {"image": path, "labels": labels}
            print(json.dumps(record, ensure_ascii=False))
        else:
            words = "  ".join(
                f"{t['label']} ({t['score']:.3f})" for t in labels
            )
            print(f"{path}: {words}")
    return 0
