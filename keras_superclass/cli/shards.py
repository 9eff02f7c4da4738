"""`keras-superclass shards`: write image-caption TFRecord shards.

Examples:

    keras-superclass shards --images imgs/ --captions captions.csv \\
        --out shards/ --max-image-size 336 --workers 4
    keras-superclass shards --tar 'laion/{00000..00099}.tar' --out shards/ \\
        --synset-vocabulary synsets.json
    keras-superclass shards --demo --out demo_data --num-train 2048 \\
        --num-test 512
"""

import argparse
import glob
import os
import re


def _expand_braces(pattern):
    """Expands img2dataset-style `{00000..00099}` ranges."""
    match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not match:
        return [pattern]
    start, stop = match.group(1), match.group(2)
    width = len(start)
    out = []
    for i in range(int(start), int(stop) + 1):
        out.extend(
            _expand_braces(
                pattern[: match.start()]
                + str(i).zfill(width)
                + pattern[match.end() :]
            )
        )
    return out


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "shards",
        help="write image-caption pairs as TFRecord shards",
        description="Write image-caption pairs (a folder of images plus a "
        "CSV/JSONL/Parquet captions file, WebDataset tar shards, or the "
        "built-in demo dataset) as TFRecord shards with a manifest.json. "
        "Re-running the same command resumes after an interruption.",
    )
    source = parser.add_argument_group("source (one of)")
    source.add_argument("--images", help="folder of images")
    source.add_argument(
        "--tar",
        nargs="+",
        help="WebDataset tar files (globs and {000..099} ranges allowed)",
    )
    source.add_argument(
        "--demo", action="store_true", help="write the synthetic demo dataset"
    )
    parser.add_argument(
        "--captions",
        help="captions file (.csv, .tsv, .jsonl, .parquet) for --images; "
        "without it each image needs a NAME.txt beside it",
    )
    parser.add_argument(
        "--image-column",
        default="file",
        help="captions file column with the image path, relative to the "
        "--images folder (default: file)",
    )
    parser.add_argument(
        "--caption-column",
        default="caption",
        help="captions file column with the caption (default: caption)",
    )
    parser.add_argument(
        "--key-column",
        default=None,
        help="captions file column with a unique key per image (default: "
        "the image path without its extension)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--records-per-shard",
        type=int,
        default=1000,
        help="records per shard file (default: 1000)",
    )
    parser.add_argument(
        "--max-image-size",
        type=int,
        default=None,
        help="re-encode images whose longest side is larger to this size "
        "(JPEG quality 95); the reference uses 336",
    )
    parser.add_argument(
        "--synset-vocabulary",
        metavar="FILE",
        help="CatLIP synset vocabulary (JSON from `keras-superclass "
        "synsets`): store each caption's synset class ids as the int64-list "
        "feature 'synsets' (needs WordNet for NLTK)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes writing shards in parallel (default: 1)",
    )
    parser.add_argument(
        "--prefix", default="shard", help="shard file name prefix"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="discard an earlier run with other arguments in --out",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # Old names of the flags, still accepted.
    parser.add_argument(
        "--max-size",
        dest="max_image_size",
        type=int,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--no-progress",
        dest="quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    demo = parser.add_argument_group("demo dataset")
    demo.add_argument(
        "--num-train", type=int, default=2048, help="training images"
    )
    demo.add_argument("--num-test", type=int, default=512, help="test images")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument(
        "--image-size", type=int, default=64, help="image side in pixels"
    )
    parser.set_defaults(func=run)


def _summary(manifest, out):
    """The lines printed after writing: counts, then each skip reason with
    its first names (the manifest lists them)."""
    skipped = ", ".join(f"{k}={v}" for k, v in manifest["skipped"].items())
    lines = [
        f"{out}: {manifest['num_records']} records in "
        f"{len(manifest['shards'])} shards; skipped {manifest['num_skipped']}"
        + (f" ({skipped})" if skipped else "")
    ]
    if manifest["num_skipped"]:
        from keras_superclass.data.shard_writer import format_skipped

        lines += [f"  {line}" for line in format_skipped(manifest)]
        lines.append(
            f"  (skipped inputs by name: 'skipped_files' in "
            f"{os.path.join(out, 'manifest.json')})"
        )
    return "\n".join(lines)


def _synset_features(path):
    """The shard writer's `extra_features_fn` of `--synset-vocabulary`."""
    from keras_superclass.data import synsets

    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--synset-vocabulary {path!r} does not exist; build one with "
            f"`keras-superclass synsets`."
        )
    try:
        synsets.check_wordnet()
    except RuntimeError as error:
        raise ValueError(str(error)) from error
    return synsets.synset_extra_features_fn(path)


def run(args):
    chosen = [bool(args.images), bool(args.tar), bool(args.demo)]
    if sum(chosen) != 1:
        raise ValueError("give exactly one of --images, --tar or --demo")
    progress = not args.quiet
    extra_features_fn = None
    if args.synset_vocabulary:
        extra_features_fn = _synset_features(args.synset_vocabulary)
    if args.demo:
        from keras_superclass.data.demo_dataset import write_demo_dataset

        manifests = write_demo_dataset(
            args.out,
            num_train=args.num_train,
            num_test=args.num_test,
            seed=args.seed,
            image_size=args.image_size,
            records_per_shard=min(args.records_per_shard, 512),
            workers=args.workers,
            progress=progress,
            extra_features_fn=extra_features_fn,
        )
        for split, manifest in manifests.items():
            print(_summary(manifest, f"{args.out}/{split}"))
        return 0

    from keras_superclass.data.shard_writer import write_shards

    if args.tar:
        source = []
        for item in args.tar:
            for pattern in _expand_braces(item):
                matched = sorted(glob.glob(pattern))
                source.extend(matched or [pattern])
    else:
        source = args.images
        if not os.path.isdir(source):
            what = "is a file" if os.path.exists(source) else "does not exist"
            raise FileNotFoundError(
                f"--images {source!r} {what}: it takes a folder of images "
                f"(the --captions file names them relative to it); for a "
                f"WebDataset tar use --tar."
            )
    manifest = write_shards(
        source,
        args.out,
        captions_file=args.captions,
        image_column=args.image_column,
        caption_column=args.caption_column,
        key_column=args.key_column,
        records_per_shard=args.records_per_shard,
        max_image_size=args.max_image_size,
        extra_features_fn=extra_features_fn,
        workers=args.workers,
        prefix=args.prefix,
        progress=progress,
        overwrite=args.overwrite,
    )
    print(_summary(manifest, args.out))
    return 0
