"""`keras-superclass synsets`: build a CatLIP WordNet synset vocabulary."""

import argparse
import os
import sys

from keras_superclass.data import synsets


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "synsets",
        help="count WordNet noun synsets in captions and write the CatLIP "
        "vocabulary (JSON)",
        description="Mines WordNet noun synsets from captions as CatLIP does "
        "and keeps those seen in more than --min-count captions, the "
        "--max-size most frequent. Captions: text files (one per line), "
        "JSONL or CSV files (--caption-column field) or TFRecord shards "
        "(bytes feature --caption-column), optionally gzipped; paths may be "
        "globs or folders. Needs WordNet for NLTK "
        "(scripts/install_wordnet.sh).",
    )
    parser.add_argument(
        "--captions",
        nargs="+",
        required=True,
        help="caption files, globs or folders (.txt, .jsonl, .csv, "
        ".tfrecord*; .gz allowed)",
    )
    parser.add_argument(
        "--caption-column",
        default="caption",
        help="caption field of JSONL / CSV / TFRecord inputs "
        "(default: caption)",
    )
    # The flag's old name, still accepted.
    parser.add_argument(
        "--column",
        dest="caption_column",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--min-count",
        type=int,
        default=synsets.DEFAULT_MIN_COUNT,
        help="keep synsets in MORE than this many captions (default: 500)",
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=synsets.DEFAULT_MAX_SIZE,
        help="keep at most this many synsets (default: 24320)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="counting processes (default: 2)",
    )
    parser.add_argument("--out", required=True, help="output JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args):
    if args.min_count < 0:
        raise ValueError(f"--min-count must be >= 0, got {args.min_count}.")
    if args.max_size is not None and args.max_size < 1:
        raise ValueError(f"--max-size must be >= 1, got {args.max_size}.")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}.")
    try:
        synsets.check_wordnet()
    except RuntimeError as error:
        raise ValueError(str(error)) from error
    captions = synsets.read_captions(args.captions, column=args.caption_column)
    counts, lemmas, num_captions = synsets.count_synsets(
        captions, workers=args.workers, show_progress=not args.quiet
    )
    vocabulary = synsets.SynsetVocabulary.from_counts(
        counts, lemmas, min_count=args.min_count, max_size=args.max_size
    )
    if len(vocabulary) == 0:
        raise ValueError(
            f"No synset appears in more than {args.min_count} of the "
            f"{num_captions} captions ({len(counts)} distinct synsets "
            f"found); lower --min-count."
        )
    vocabulary.save(args.out)
    print(
        f"{num_captions} captions, {len(counts)} distinct synsets; kept "
        f"{len(vocabulary)} with count > {args.min_count} -> {args.out}",
        file=sys.stderr,
    )
    return 0
