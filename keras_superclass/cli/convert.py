"""`keras-superclass convert`: a reference PyTorch checkpoint -> a preset.

Examples:
    keras-superclass convert --checkpoint superclass_b16.pt \\
        --preset superclass_vit_b16 --out presets/superclass_b16
    # An OpenCLIP CLIP (both towers) -> an ImageTextModel preset; OpenAI
    # weights use QuickGELU, LAION ones not.
    keras-superclass convert --image-text --quick-gelu \\
        --checkpoint vit_b16_openai.pt --out presets/clip_b16
"""

import logging
import os
import shutil
import tempfile

from keras_superclass.cli import add_overwrite_argument
from keras_superclass.cli import check_output_dir

logger = logging.getLogger(__name__)

# Backbone config overrides: flag -> config key.
_ARCHITECTURE_FLAGS = {
    "patch_size": "patch_size",
    "num_layers": "num_layers",
    "num_heads": "num_heads",
    "hidden_dim": "hidden_dim",
    "mlp_dim": "mlp_dim",
}


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "convert",
        help="convert an OpenCLIP / SuperClass PyTorch checkpoint into a "
        "keras-hub preset directory",
        description="Builds a SuperClassClassifier from an architecture "
        "preset, loads a reference checkpoint (OpenCLIP vision tower, "
        "OpenCLIP CLIP or SuperClass, .pt/.pth/.bin/.safetensors/.npz) and "
        "writes a preset directory with `save_to_preset`.",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="Path of the checkpoint file."
    )
    parser.add_argument(
        "--preset",
        default="superclass_vit_b16",
        help="Architecture preset matching the checkpoint "
        "(default: superclass_vit_b16).",
    )
    parser.add_argument(
        "--vocabulary-size",
        type=int,
        default=None,
        help="Classes of the head; defaults to the checkpoint's head, else "
        "the preset's (49,408).",
    )
    parser.add_argument("--out", required=True, help="Preset directory.")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="Input side in pixels (the position table is resized if the "
        "checkpoint was trained at another size).",
    )
    for flag in _ARCHITECTURE_FLAGS:
        parser.add_argument(
            "--" + flag.replace("_", "-"),
            type=int,
            default=None,
            help=f"Override the preset's {flag}.",
        )
    clip = parser.add_argument_group(
        "image-text models (OpenCLIP CLIP checkpoints, both towers)"
    )
    clip.add_argument(
        "--image-text",
        action="store_true",
        help="Convert a whole OpenCLIP CLIP state dict into an "
        "ImageTextModel; the architecture is read from the checkpoint "
        "(--preset and --vocabulary-size do not apply).",
    )
    clip.add_argument(
        "--image-pooling",
        choices=("cls", "avg"),
        default="cls",
        help="Image-tower pooling: 'cls' (OpenCLIP ViTs, default) or 'avg' "
        "(ViT-*-avg towers, SuperClass / LiT).",
    )
    clip.add_argument(
        "--quick-gelu",
        action="store_true",
        help="QuickGELU MLPs: OpenAI CLIP checkpoints (LAION: leave off).",
    )
    clip.add_argument(
        "--text-num-heads",
        type=int,
        default=None,
        help="Text-tower heads (default width / 64, as OpenCLIP).",
    )
    parser.add_argument(
        "--no-strict",
        action="store_true",
        help="Allow missing or unmatched weights (e.g. an OpenCLIP tower "
        "without a SuperClass head: the head keeps its initialisation).",
    )
    add_overwrite_argument(parser)
    parser.set_defaults(func=run)
    return parser


def run(args):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = os.path.abspath(args.out)
    check_output_dir(out, args.overwrite)
    # Imports after argument checks: they load the deep-learning stack.
    from keras_superclass.convert.openclip import infer_vocabulary_size
    from keras_superclass.convert.openclip import load_reference_weights
    from keras_superclass.convert.openclip import normalize_state_dict
    from keras_superclass.models.superclass.superclass_classifier import (
        SuperClassClassifier,
    )

    logger.info("Reading %s", args.checkpoint)
    state_dict = normalize_state_dict(args.checkpoint)
    if args.image_text:
        return _run_image_text(args, state_dict, out)
    vocabulary_size = args.vocabulary_size or infer_vocabulary_size(state_dict)
    kwargs = {"compile": False}
    if vocabulary_size:
        kwargs["vocabulary_size"] = vocabulary_size
    if args.image_size:
        kwargs["image_shape"] = (args.image_size, args.image_size, 3)
    for flag, key in _ARCHITECTURE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            kwargs[key] = value
    if args.hidden_dim and args.mlp_dim is None:
        kwargs["mlp_dim"] = 4 * args.hidden_dim
    logger.info("Building %s", args.preset)
    model = SuperClassClassifier.from_preset(args.preset, **kwargs)
    report = load_reference_weights(
        model, state_dict, strict=not args.no_strict
    )
    logger.info(
        "Loaded %d entries; ignored %d (text tower, CLIP projection, ...).",
        len(report.loaded),
        len(report.ignored),
    )
    if report.missing:
        logger.warning(
            "%d model weights kept their initialisation.", len(report.missing)
        )

    _write_preset(model, out)
    return 0


def _run_image_text(args, state_dict, out):
    from keras_superclass.convert.openclip_clip import (
        image_text_model_from_openclip,
    )

    model, report = image_text_model_from_openclip(
        state_dict,
        image_pooling=args.image_pooling,
        mlp_activation="quick_gelu" if args.quick_gelu else "gelu",
        num_heads=args.num_heads,
        text_num_heads=args.text_num_heads,
        image_size=args.image_size,
        strict=not args.no_strict,
    )
    logger.info("Loaded %d entries into an ImageTextModel.", len(report.loaded))
    _write_preset(model, out)
    return 0


def _write_preset(model, out):
    """`model.save_to_preset(out)`, all or nothing."""
    parent = os.path.dirname(out) or "."
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".convert-", dir=parent)
    try:
        model.save_to_preset(staging)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Wrote the preset to %s", out)
