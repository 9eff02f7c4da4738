"""`keras-superclass vocab`: learn a caption vocabulary, save a tokenizer."""

import itertools
import os


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "vocab",
        help="learn a WordPiece / SentencePiece / word vocabulary",
        description="Learns a tokenizer vocabulary from captions and saves "
        "the tokenizer as preset files (tokenizer.json + assets/).",
    )
    parser.add_argument(
        "--kind",
        required=True,
        choices=("wordpiece", "sentencepiece", "word"),
        help="tokenizer kind to train",
    )
    parser.add_argument(
        "--captions",
        nargs="+",
        required=True,
        help="caption files, globs or folders: .txt (one a line), .jsonl, "
        ".csv, or TFRecord shards with a 'caption' feature (.gz allowed)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=32000,
        help="vocabulary size (default: 32000)",
    )
    parser.add_argument(
        "--min-count",
        type=int,
        default=1,
        help="word kind: keep words seen at least this often",
    )
    parser.add_argument(
        "--caption-column",
        default="caption",
        help="caption field of JSONL / CSV / TFRecord inputs "
        "(default: caption)",
    )
    parser.add_argument(
        "--max-captions",
        type=int,
        default=None,
        help="learn from at most this many captions",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.set_defaults(func=run)
    return parser


def run(args):
    from keras_superclass.data.document_frequency import iter_captions
    from keras_superclass.data.tokenizers import train_tokenizer

    if args.size < 8:
        raise ValueError(f"--size must be at least 8, got {args.size}.")
    source = iter_captions(args.captions, args.caption_column)
    captions = list(itertools.islice(source, args.max_captions))
    if not captions:
        raise ValueError(
            f"No caption was read from {' '.join(args.captions)!r}."
        )
    kwargs = {}
    if args.kind == "word":
        kwargs["min_count"] = args.min_count
    tokenizer = train_tokenizer(
        args.kind, captions, vocabulary_size=args.size, **kwargs
    )
    os.makedirs(args.out, exist_ok=True)
    tokenizer.save_to_preset(args.out)
    print(
        f"{args.kind} tokenizer: {tokenizer.vocabulary_size()} ids from "
        f"{len(captions)} captions ({source.num_skipped} records skipped) "
        f"-> {args.out}"
    )
    return 0
