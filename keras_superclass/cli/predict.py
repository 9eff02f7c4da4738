"""`keras-superclass predict`: top-k caption tokens of images."""

import json


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "predict",
        help="print the top-k predicted tokens (or synsets) of images",
        description="Load a trained task preset (with its tokenizer) and "
        "print the k highest-scoring tokens of each image.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--preset", required=True, help="task preset directory")
    parser.add_argument("--top-k", type=int, default=10)
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
