"""`keras-superclass zeroshot`: zero-shot classification with prompts.

Loads an image-text preset (CLIP, or an encoder after LiT), embeds every
class name in every prompt template, and classifies labelled images
(class folders, a labels table or labelled TFRecord shards) by the
closest class embedding. Prints top-1 / top-5 accuracy; `--out` also
writes them as JSON.
"""

from keras_superclass.cli.retrieval import load_image_text_model


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "zeroshot",
        help="zero-shot classification of labelled images with prompts",
        description=__doc__,
    )
    parser.add_argument(
        "--preset",
        required=True,
        help="Image-text preset directory (`keras-superclass export` of a "
        "lit or clip run).",
    )
    parser.add_argument(
        "--images",
        required=True,
        help="A folder of class sub-folders, a labels table (CSV/TSV with "
        "file,label[,split]) or labelled TFRecord shards.",
    )
    parser.add_argument(
        "--classnames",
        required=True,
        help="Text file with one class name per line, in class-id order "
        "(the sorted class folders, or the shards' label ids).",
    )
    parser.add_argument(
        "--templates",
        default=None,
        help="Text file of prompt templates, one per line with '{}' for "
        "the class name (default: OpenAI's 80 ImageNet templates).",
    )
    parser.add_argument(
        "--label-feature",
        default="label",
        help="With TFRecord shards: the integer label feature "
        "(e.g. label_shape for the demo data).",
    )
    parser.add_argument(
        "--split", default=None, help="With a labels table: the split rows."
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images per batch"
    )
    parser.add_argument("--out", default=None, help="Write results as JSON.")
    parser.set_defaults(func=run)


def run(args):
    from keras_superclass.evaluation.zero_shot import load_class_names
    from keras_superclass.evaluation.zero_shot import load_templates
    from keras_superclass.evaluation.zero_shot import zero_shot_classify
    from keras_superclass.utils.io import atomic_write_json

    class_names = load_class_names(args.classnames)
    templates = load_templates(args.templates)
    model = load_image_text_model(args.preset)
    result = zero_shot_classify(
        model,
        args.images,
        class_names=class_names,
        templates=templates,
        label_feature=args.label_feature,
        split=args.split,
        batch_size=args.batch_size,
        verbose=True,
    )
    summary = {
        k: v
        for k, v in result.items()
        if k not in ("predictions", "labels", "class_names")
    }
    accuracies = ", ".join(
        f"top-{k} {summary[f'top{k}']:.4f}"
        for k in (1, 5)
        if summary[f"top{k}"] is not None
    )
    print(
        f"zero-shot on {summary['num_images']} images, "
        f"{summary['num_classes']} classes, {summary['num_templates']} "
        f"templates: {accuracies}"
    )
    if args.out:
        atomic_write_json(args.out, summary)
    return 0
