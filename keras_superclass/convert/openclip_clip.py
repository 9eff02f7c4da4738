"""OpenCLIP CLIP checkpoints (both towers) -> `ImageTextModel`.

Layouts (with or without DDP's `module.`, bare or in `{"state_dict": ...}`,
read as `openclip.normalize_state_dict` reads every checkpoint):

- `CLIP` (OpenAI and LAION ViT checkpoints): `visual.*` (the ViT and its
  projection `visual.proj (W, D)`), the text tower at the top level
  (`token_embedding.weight`, `positional_embedding`,
  `transformer.resblocks.{i}.*`, `ln_final.*`, `text_projection (W, D)`)
  and `logit_scale` (plus `logit_bias` for SigLIP);
- `CustomTextCLIP`: the same text tower under `text.`.

OpenAI checkpoints use QuickGELU in both towers (OpenCLIP's `-quickgelu`
models); LAION ones exact GELU. A state dict does not say which, nor the
number of heads (OpenCLIP: width / 64) or the ViT's pooling (class token
for OpenCLIP's ViTs, mean for `-avg`): pass them when building.
"""

import re

import numpy as np

from keras_superclass.convert.openclip import describe_tower
from keras_superclass.convert.openclip import normalize_state_dict
from keras_superclass.convert.report import ConversionReport
from keras_superclass.convert.report import check_names
from keras_superclass.convert.report import few_keys
from keras_superclass.convert.vit_weights import blocks_pairs
from keras_superclass.convert.vit_weights import dense_kernel
from keras_superclass.convert.vit_weights import fit_positions
from keras_superclass.convert.vit_weights import layer_norm_pairs
from keras_superclass.convert.vit_weights import square_grid
from keras_superclass.convert.vit_weights import tower_pairs
from keras_superclass.convert.vit_weights import unchanged

_VISUAL = "visual."
_TEXT = "text."
# Buffers some OpenCLIP versions save; nothing to load.
_IGNORED = ("attn_mask", "text.attn_mask")
_BLOCK_RE = re.compile(r"^transformer\.resblocks\.(\d+)\.")


def split_clip_state_dict(state_dict):
    """`(visual, text, scalars, text_prefix)` of a normalised state dict."""
    if "visual.conv1.weight" not in state_dict:
        raise ValueError(
            "Not an OpenCLIP CLIP checkpoint: 'visual.conv1.weight' is "
            f"missing (found {few_keys(state_dict)}). Only ViT image towers "
            "with OpenCLIP's names load into ImageTextModel."
        )
    text_prefix = (
        _TEXT if f"{_TEXT}token_embedding.weight" in state_dict else ""
    )
    visual, text, scalars = {}, {}, {}
    for name, value in state_dict.items():
        if name in _IGNORED:
            continue
        if name.startswith(_VISUAL):
            visual[name[len(_VISUAL) :]] = value
        elif name in ("logit_scale", "logit_bias"):
            scalars[name] = value
        elif name.startswith(text_prefix):
            text[name[len(text_prefix) :]] = value
        else:
            text[name] = value  # Reported as unexpected below.
    return visual, text, scalars, text_prefix


def _count_blocks(tower):
    found = {int(m.group(1)) for k in tower if (m := _BLOCK_RE.match(k))}
    return max(found) + 1 if found else 0


def describe_clip(state_dict):
    """The architecture a CLIP state dict holds, as `ImageTextModel` args.

    Returns:
        `{"backbone": {...SuperClassBackbone args}, "text_encoder": {...},
        "embed_dim": D, "logit_bias": bool}`; the heads default to
        width / 64 (OpenCLIP's default) and pooling is not included.
    """
    state_dict = normalize_state_dict(state_dict)
    visual, text, scalars, _ = split_clip_state_dict(state_dict)
    width, _, patch, _ = visual["conv1.weight"].shape
    num_patches = visual["positional_embedding"].shape[0]
    use_class_token = "class_embedding" in visual
    grid = square_grid(num_patches - int(use_class_token))
    if grid is None:
        raise ValueError(
            f"The vision position table has {num_patches} rows, not a "
            f"square grid: {describe_tower(visual)}."
        )
    if "token_embedding.weight" not in text:
        raise ValueError(
            "The checkpoint has no text tower ('token_embedding.weight'); "
            "load an image tower alone into SuperClassBackbone instead."
        )
    vocab, text_width = text["token_embedding.weight"].shape
    projection = text.get("text_projection")
    if projection is None:
        projection = text["text_projection.weight"].T
    return {
        "backbone": {
            "image_shape": [grid[0] * patch, grid[1] * patch, 3],
            "patch_size": int(patch),
            "num_layers": _count_blocks(visual),
            "num_heads": max(1, int(width) // 64),
            "hidden_dim": int(width),
            "mlp_dim": int(
                visual["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
            ),
            "use_class_token": use_class_token,
        },
        "text_encoder": {
            "vocabulary_size": int(vocab),
            "sequence_length": int(text["positional_embedding"].shape[0]),
            "hidden_dim": int(text_width),
            "num_layers": _count_blocks(text),
            "num_heads": max(1, int(text_width) // 64),
            "mlp_dim": int(
                text["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
            ),
        },
        "embed_dim": int(projection.shape[-1]),
        "logit_bias": "logit_bias" in scalars,
    }


def _text_pairs(model, text):
    encoder = model.text_encoder
    embedding = encoder.embedding
    pairs = [
        ("token_embedding.weight", embedding.token_embedding, unchanged),
        ("positional_embedding", embedding.positional_embedding, unchanged),
    ]
    pairs += blocks_pairs(encoder.transformer_blocks)
    pairs += layer_norm_pairs("ln_final", encoder.ln_final)
    kernel = model.text_projection.kernel
    if "text_projection.weight" in text:  # nn.Linear projection (W -> D)
        pairs.append(("text_projection.weight", kernel, dense_kernel))
    else:  # A parameter used as `x @ text_projection`: (W, D) already.
        pairs.append(("text_projection", kernel, unchanged))
    return pairs


def _scalar(value):
    value = np.asarray(value, dtype="float32")
    if value.size != 1:
        raise ValueError(f"Expected a scalar, got shape {value.shape}.")
    return value.reshape(())


def load_clip_weights(model, state_dict_or_path, strict=True):
    """Loads an OpenCLIP CLIP checkpoint into an `ImageTextModel`.

    Both towers, both projections and `logit_scale` (and `logit_bias`)
    load; layouts are converted as in `load_reference_weights` (the text
    tower's blocks have the image tower's layout). Everything is checked
    before any weight is written. Build the model with the checkpoint's
    architecture: `image_text_model_from_openclip` does it for you.

    Args:
        model: an `ImageTextModel` whose image encoder is a
            `SuperClassBackbone` with `stem="patch"`.
        state_dict_or_path: a `{name: tensor}` dict or a checkpoint path
            (`.pt` / `.pth` / `.bin` via `torch.load(weights_only=True)`,
            `.safetensors`, `.npz`).
        strict: raise on missing or unmatched entries (with `False` they
            are reported; missing weights keep their initialisation).

    Returns:
        A `ConversionReport`.
    """
    state_dict = normalize_state_dict(state_dict_or_path)
    visual, text, scalars, text_prefix = split_clip_state_dict(state_dict)
    backbone = model.backbone
    if not hasattr(backbone, "patch_embedding"):
        raise TypeError(
            f"The image encoder is a {type(backbone).__name__}; OpenCLIP "
            f"ViT towers only load into a SuperClassBackbone."
        )
    layer = model.logit_scale_layer
    pairs = [(_VISUAL + k, v, t) for k, v, t in tower_pairs(backbone)]
    pairs.append((_VISUAL + "proj", model.image_projection.kernel, unchanged))
    pairs += [(text_prefix + k, v, t) for k, v, t in _text_pairs(model, text)]
    pairs.append(("logit_scale", layer.logit_scale, _scalar))
    if layer.logit_bias is not None:
        pairs.append(("logit_bias", layer.logit_bias, _scalar))
    elif "logit_bias" in scalars:
        raise ValueError(
            "The checkpoint has a 'logit_bias' (a SigLIP model) but the "
            "model has none: build it with logit_bias_init=-10.0."
        )

    report = ConversionReport()
    missing = [key for key, _, _ in pairs if key not in state_dict]
    used = {key for key, _, _ in pairs}
    unexpected = [k for k in state_dict if k not in used and k not in _IGNORED]
    report.ignored = sorted(k for k in state_dict if k in _IGNORED)
    hint = (
        f"The checkpoint holds {describe_tower(visual)} (image) and "
        f"{_count_blocks(text)} text layers; build the model with the "
        f"checkpoint's architecture (image_text_model_from_openclip)."
    )
    check_names(report, missing, unexpected, hint, strict)

    updates = []
    for key, variable, transform in pairs:
        if key not in state_dict:
            continue
        value = transform(state_dict[key])
        target = tuple(variable.shape)
        if key == _VISUAL + "positional_embedding" and value.shape != target:
            value = fit_positions(value, backbone, report, hint)
        if tuple(value.shape) != target:
            raise ValueError(
                f"Shape mismatch for '{key}': the checkpoint has "
                f"{tuple(np.shape(state_dict[key]))} (as {tuple(value.shape)}"
                f" in Keras layout) but the model expects {target}. {hint}"
            )
        updates.append((variable, value))
        report.loaded.append(key)
    for variable, value in updates:
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return report


def image_text_model_from_openclip(
    state_dict_or_path,
    image_pooling="cls",
    mlp_activation="gelu",
    num_heads=None,
    text_num_heads=None,
    image_size=None,
    strict=True,
    **kwargs,
):
    """Builds the `ImageTextModel` a CLIP checkpoint describes and loads it.

    Args:
        state_dict_or_path: the checkpoint (see `load_clip_weights`).
        image_pooling: `"cls"` (OpenCLIP's ViTs, e.g. `ViT-B-16`) or
            `"avg"` (`ViT-B-16-avg`, SuperClass / LiT towers).
        mlp_activation: `"quick_gelu"` for OpenAI checkpoints, `"gelu"`
            (LAION and OpenCLIP-trained ones).
        num_heads: image-tower heads (default width / 64).
        text_num_heads: text-tower heads (default width / 64).
        image_size: input side if not the checkpoint's (the position
            table is resized).
        strict: see `load_clip_weights`.
        **kwargs: more `ImageTextModel` arguments (`normalize_images`,
            `preprocessor`, `dtype`, ...).

    Returns:
        `(model, report)`, the model not compiled.
    """
    from keras_superclass.models.image_text.image_text_layers import (
        SIGLIP_LOGIT_BIAS_INIT,
    )
    from keras_superclass.models.image_text.image_text_model import (
        ImageTextModel,
    )
    from keras_superclass.models.superclass.superclass_backbone import (
        SuperClassBackbone,
    )

    state_dict = normalize_state_dict(state_dict_or_path)
    arch = describe_clip(state_dict)
    backbone_args = {
        **arch["backbone"],
        "pooling": image_pooling,
        "mlp_activation": mlp_activation,
    }
    if num_heads:
        backbone_args["num_heads"] = int(num_heads)
    if image_size:
        backbone_args["image_shape"] = [image_size, image_size, 3]
    text_args = {**arch["text_encoder"], "mlp_activation": mlp_activation}
    if text_num_heads:
        text_args["num_heads"] = int(text_num_heads)
    dtype = kwargs.pop("dtype", None)
    if arch["logit_bias"]:
        kwargs.setdefault("logit_bias_init", SIGLIP_LOGIT_BIAS_INIT)
    model = ImageTextModel(
        SuperClassBackbone(**backbone_args, dtype=dtype),
        text_encoder=text_args,
        embed_dim=arch["embed_dim"],
        compile=False,
        **kwargs,
    )
    report = load_clip_weights(model, state_dict, strict=strict)
    return model, report
