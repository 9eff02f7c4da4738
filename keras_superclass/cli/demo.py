"""`keras-superclass demo`: the end-to-end CPU demo."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="generate data, pretrain a tiny model, probe it, write a report",
        description="Generate the demo dataset, pretrain a tiny SuperClass "
        "ViT, linear-probe it against a random-initialised twin, and write "
        "report.md, results.json and PNG plots.",
    )
    parser.add_argument("--out", default="demo_output", help="output folder")
    parser.add_argument(
        "--num-train", type=int, default=3072, help="training images"
    )
    parser.add_argument("--num-test", type=int, default=768, help="test images")
    parser.add_argument("--steps", type=int, default=None, help="train steps")
    parser.add_argument(
        "--probe-epochs", type=int, default=30, help="linear-probe epochs"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--data-only",
        action="store_true",
        help="only write the data the tiny configs read (shards, word "
        "tokenizer, synset vocabulary), then stop",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides"
    )
    parser.set_defaults(func=run)


def run(args):
    from keras_superclass.demo import run_demo

    if args.data_only:
        from keras_superclass.demo.pipeline import prepare_demo_data

        prepare_demo_data(args.out, args.num_train, args.num_test, args.seed)
        print(
            f"Wrote the demo data to {args.out}: now e.g. "
            f"`keras-superclass train --config demo_tiny`"
        )
        return 0

    run_demo(
        out_dir=args.out,
        num_train=args.num_train,
        num_test=args.num_test,
        total_steps=args.steps,
        probe_epochs=args.probe_epochs,
        seed=args.seed,
        overrides=args.overrides,
    )
    return 0
