"""`keras-superclass df`: document frequencies of a caption corpus."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "df",
        help="count token document frequencies (for a fixed IDF)",
        description="Counts how many captions contain each token and writes "
        "the table for SuperClassLoss(idf='fixed').",
    )
    parser.add_argument(
        "--tokenizer",
        default="clip",
        help="'clip' or a tokenizer directory written by `vocab`",
    )
    parser.add_argument(
        "--captions",
        nargs="+",
        required=True,
        help="caption files, globs or folders: .txt (one a line), .jsonl, "
        ".csv, or TFRecord shards with a 'caption' feature (.gz allowed)",
    )
    parser.add_argument(
        "--caption-column",
        default="caption",
        help="caption field of JSONL / CSV / TFRecord inputs "
        "(default: caption)",
    )
    parser.add_argument(
        "--bpe-path",
        default=None,
        help="clip: path of bpe_simple_vocab_16e6.txt.gz (default: the "
        "copy shipped with this package)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1024,
        help="captions tokenized per batch (default: 1024)",
    )
    parser.add_argument(
        "--out", required=True, help="output table (.json or .npz)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress")
    parser.set_defaults(func=run)
    return parser


def run(args):
    from keras_superclass.data.document_frequency import (
        compute_document_frequencies,
    )
    from keras_superclass.data.document_frequency import iter_captions
    from keras_superclass.data.document_frequency import (
        save_document_frequencies,
    )
    from keras_superclass.data.tokenizers import get_tokenizer
    from keras_superclass.data.tokenizers import load_tokenizer
    from keras_superclass.data.tokenizers import tokenizer_kind

    if args.tokenizer == "clip":
        tokenizer = get_tokenizer("clip", vocabulary=args.bpe_path)
    else:
        tokenizer = load_tokenizer(args.tokenizer)
    source = iter_captions(args.captions, args.caption_column)
    df, num_documents = compute_document_frequencies(
        source,
        tokenizer,
        batch_size=args.batch_size,
        show_progress=not args.quiet,
    )
    if num_documents == 0:
        raise ValueError(
            f"No caption was read from {' '.join(args.captions)!r}."
        )
    save_document_frequencies(
        args.out,
        df,
        num_documents,
        tokenizer_kind=tokenizer_kind(tokenizer),
        metadata={
            "captions": " ".join(args.captions),
            "tokenizer": str(args.tokenizer),
            "records_skipped": source.num_skipped,
        },
    )
    print(
        f"document frequencies of {df.shape[0]} tokens over {num_documents} "
        f"captions ({source.num_skipped} records skipped) -> {args.out}"
    )
    return 0
