"""`keras-superclass export`: a training checkpoint as a keras-hub preset."""

from keras_superclass.cli import add_overwrite_argument
from keras_superclass.cli import check_output_dir


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export",
        help="export a run's checkpoint as a keras-hub preset directory",
        description="Rebuild the model of a training run, load its latest "
        "(or given) checkpoint and write a preset directory with weights, "
        "configs, tokenizer assets and IDF statistics.",
    )
    parser.add_argument("--run", required=True, help="checkpoint.dir of a run")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--step",
        type=int,
        default=None,
        help="checkpoint step (default: the latest)",
    )
    weights.add_argument(
        "--random-init",
        action="store_true",
        help="restore no checkpoint: the run's architecture at random "
        "initialisation (seeded by data.seed), e.g. to compare pretrained "
        "and random features with `probe`",
    )
    parser.add_argument("--out", required=True, help="preset directory")
    add_overwrite_argument(parser)
    parser.set_defaults(func=run)


def run(args):
    import os

    from keras_superclass.training.checkpoints import CheckpointManager
    from keras_superclass.training.config import load_config
    from keras_superclass.training.config_checks import check_paths
    from keras_superclass.training.export import export_preset
    from keras_superclass.training.trainer import build_compiled_model

    check_output_dir(args.out, args.overwrite)
    config_path = os.path.join(args.run, "config.yaml")
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"{args.run} is not a training run directory (no config.yaml)."
        )
    config = load_config(config_path)
    check_paths(config, training=False)
    manager = CheckpointManager(args.run)
    if not args.random_init:
        manager.resolve_step(args.step)  # fails early, before building
    # The training optimizer: the checkpoint's optimizer state matches.
    model = build_compiled_model(config, training_loss=False)
    if args.random_init:
        export_preset(model, config, args.out)
        print(
            f"Exported the architecture of {args.run} at random "
            f"initialisation (no checkpoint) to {args.out}"
        )
        return 0
    meta = manager.restore(model, step=args.step)
    export_preset(model, config, args.out)
    print(f"Exported step {meta['step']} of {args.run} to {args.out}")
    return 0
