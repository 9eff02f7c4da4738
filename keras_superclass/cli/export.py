"""`keras-superclass export`: a training checkpoint as a keras-hub preset."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export",
        help="export a run's checkpoint as a keras-hub preset directory",
        description="Rebuild the model of a training run, load its latest "
        "(or given) checkpoint and write a preset directory with weights, "
        "configs, tokenizer assets and IDF statistics.",
    )
    parser.add_argument("--run", required=True, help="checkpoint.dir of a run")
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--out", required=True, help="preset directory")
    parser.set_defaults(func=run)


def run(args):
    import os

    from keras_superclass.training.builders import build_preprocessor
    from keras_superclass.training.builders import build_task
    from keras_superclass.training.checkpoints import CheckpointManager
    from keras_superclass.training.config import load_config
    from keras_superclass.training.export import export_preset

    config_path = os.path.join(args.run, "config.yaml")
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"{args.run} is not a training run directory (no config.yaml)."
        )
    config = load_config(config_path)
    model = build_task(config, build_preprocessor(config))
    model.compile()
    meta = CheckpointManager(args.run).restore(model, step=args.step)
    export_preset(model, config, args.out)
    print(f"Exported step {meta['step']} of {args.run} to {args.out}")
    return 0
