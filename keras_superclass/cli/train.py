"""`keras-superclass train`: pretrain from a YAML config."""

import os
import tempfile


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="pretrain a SuperClass/CatLIP model from a YAML config",
        description="Pretrain from a YAML config (a path or a shipped "
        "config name such as cls_vit_b16_s512m_bs16k). Checkpoints, logs "
        "and the config go to checkpoint.dir. Every visible device is used "
        "(data parallel) unless distribution.kind=none; "
        "distribution.kind=model distribution.mesh_shape=[2,4] shards the "
        "token head and MLP kernels.",
    )
    parser.add_argument("--config", required=True, help="YAML file or name")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in checkpoint.dir",
    )
    parser.add_argument(
        "--export",
        metavar="DIR",
        help="after training, write the model as a keras-hub preset",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. training.total_steps=100",
    )
    parser.set_defaults(func=run)


def run(args):
    from keras_superclass.training.config import load_config
    from keras_superclass.training.export import export_preset
    from keras_superclass.training.trainer import train

    config = load_config(args.config, overrides=args.overrides)
    model, _ = train(config, resume=args.resume)
    if args.export:
        from keras_superclass.distribution import is_chief

        if not is_chief():  # all save (collective on JAX); one keeps it
            with tempfile.TemporaryDirectory() as scratch:
                export_preset(model, config, os.path.join(scratch, "p"))
            return 0
        export_preset(model, config, args.export)
        print(f"Exported the trained model to {args.export}")
    return 0
