"""`keras-superclass retrieval`: image <-> text recall@1/5/10.

Loads an image-text preset and ranks the captions of captioned TFRecord
shards for every image (and the images for every caption); image `i` and
caption `i` are a pair. `--out` also writes the recalls as JSON.
"""


def load_image_text_model(preset):
    """An image-text task preset (anything with `encode_texts`)."""
    from keras_superclass.inference import load_task

    model = load_task(preset)
    if not hasattr(model, "encode_texts"):
        raise ValueError(
            f"{preset} holds a {type(model).__name__}, which has no text "
            f"tower: zero-shot and retrieval need an image-text preset "
            f"(train model.task: lit or clip, then `keras-superclass "
            f"export`)."
        )
    return model


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "retrieval",
        help="image <-> text retrieval recall@K on captioned shards",
        description=__doc__,
    )
    parser.add_argument(
        "--preset", required=True, help="Image-text preset directory."
    )
    parser.add_argument(
        "--captions",
        required=True,
        help="Captioned TFRecord shards (glob or folder).",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="Use the first N pairs."
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="pairs per batch"
    )
    parser.add_argument("--out", default=None, help="Write results as JSON.")
    parser.set_defaults(func=run)


def run(args):
    from keras_superclass.evaluation.retrieval import evaluate_retrieval
    from keras_superclass.utils.io import atomic_write_json

    model = load_image_text_model(args.preset)
    result = evaluate_retrieval(
        model,
        args.captions,
        batch_size=args.batch_size,
        limit=args.limit,
        verbose=True,
    )
    print(f"retrieval on {result['num_pairs']} image-caption pairs")
    for key, value in result.items():
        if "@" in key:
            print(f"  {key}: {value:.4f}")
    if args.out:
        atomic_write_json(args.out, result)
    return 0
