"""Loads OpenCLIP / SuperClass PyTorch checkpoints into the Keras models.

Supported layouts (all with or without the `module.` prefix of DDP, and
also inside a training checkpoint `{"state_dict": ...}`):

- an OpenCLIP vision tower (`conv1.weight`, `class_embedding`,
  `positional_embedding`, `ln_pre.*`, `transformer.resblocks.{i}.*`,
  `ln_post.*`);
- a full OpenCLIP `CLIP` state dict: the tower under `visual.`; the text
  tower is ignored;
- a SuperClass checkpoint (x-cls/superclass `Classifier`): the tower under
  `visual.`, the `MixClsHead` under `text_decoder.` (`mlps.{i}.c_norm`,
  `mlps.{i}.c_fc`, `mlps.{i}.c_proj`, `ln_mlp`, `text_projection`) and the
  online-IDF buffers `cap_fq` `[1, V]` and `num_samples` `[1, 1]`.
"""

import logging
import os
import re

import numpy as np

from keras_superclass.convert.files import read_state_dict
from keras_superclass.convert.files import to_numpy
from keras_superclass.convert.report import ConversionReport
from keras_superclass.convert.report import check_names
from keras_superclass.convert.report import few_keys
from keras_superclass.convert.vit_weights import dense_pairs
from keras_superclass.convert.vit_weights import fit_positions
from keras_superclass.convert.vit_weights import layer_norm_pairs
from keras_superclass.convert.vit_weights import tower_pairs

logger = logging.getLogger(__name__)

_PREFIXES_TO_STRIP = ("module.", "_orig_mod.")
_TOWER_PREFIX = "visual."
_HEAD_PREFIX = "text_decoder."
_BUFFERS = ("cap_fq", "num_samples")
_BLOCK_RE = re.compile(r"^transformer\.resblocks\.(\d+)\.")
_HEAD_MLP_RE = re.compile(r"^mlps\.(\d+)\.")
# Vision-tower entries SuperClass has no use for. `proj` is CLIP's image
# projection (SuperClass has none; with `embed_dim=0` it is absent or empty).
_IGNORED_TOWER_KEYS = ("proj",)


def normalize_state_dict(state_dict):
    """Unwraps `{"state_dict": ...}`, strips `module.`, returns NumPy."""
    if isinstance(state_dict, str | os.PathLike):
        state_dict = read_state_dict(state_dict)
    if not isinstance(state_dict, dict):
        raise TypeError(
            f"Expected a state dict (a mapping of names to tensors) or a "
            f"checkpoint path, got {type(state_dict).__name__}."
        )
    for key in ("state_dict", "model", "model_state_dict"):
        inner = state_dict.get(key)
        if isinstance(inner, dict) and inner:
            state_dict = inner
            break
    result = {}
    for name, value in state_dict.items():
        if not hasattr(value, "shape"):
            continue  # Scalars / metadata of a training checkpoint.
        stripped = name
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES_TO_STRIP:
                if stripped.startswith(prefix):
                    stripped = stripped[len(prefix) :]
                    changed = True
        result[stripped] = to_numpy(value)
    if not result:
        raise ValueError("The checkpoint holds no tensors.")
    return result


def split_state_dict(state_dict):
    """Splits a normalised state dict into tower, head, buffers, ignored.

    Returns:
        `(tower, head, buffers, ignored)`: dicts keyed by the names inside
        the tower (`conv1.weight`, ...) and the head (`ln_mlp.weight`,
        ...), the IDF buffers, and the list of ignored keys.
    """
    tower, head, buffers, ignored = {}, {}, {}, []
    has_visual = any(k.startswith(_TOWER_PREFIX) for k in state_dict)
    for name, value in state_dict.items():
        if has_visual:
            if name.startswith(_TOWER_PREFIX):
                tower[name[len(_TOWER_PREFIX) :]] = value
            elif name.startswith(_HEAD_PREFIX):
                head[name[len(_HEAD_PREFIX) :]] = value
            elif name in _BUFFERS:
                buffers[name] = value
            else:
                ignored.append(name)  # Text tower, logit_scale, ...
        elif name.startswith(_HEAD_PREFIX):
            head[name[len(_HEAD_PREFIX) :]] = value
        elif name in _BUFFERS:
            buffers[name] = value
        else:
            tower[name] = value
    return tower, head, buffers, ignored


def describe_tower(tower):
    """A short description of the ViT a tower state dict holds."""
    parts = []
    if "class_embedding" in tower:
        parts.append(f"width {tower['class_embedding'].shape[-1]}")
    blocks = {
        int(m.group(1)) for k in tower if (m := _BLOCK_RE.match(k)) is not None
    }
    if blocks:
        parts.append(f"{max(blocks) + 1} layers")
    if "conv1.weight" in tower:
        parts.append(f"patch {tower['conv1.weight'].shape[-1]}")
    if "positional_embedding" in tower:
        parts.append(f"{tower['positional_embedding'].shape[0]} positions")
    return ", ".join(parts) or "unknown layout"


def _describe_model(backbone):
    grid = backbone.position_grid_size
    positions = grid[0] * grid[1] + int(backbone.use_class_token)
    return (
        f"width {backbone.hidden_dim}, {backbone.num_layers} layers, patch "
        f"{backbone.patch_size}, {positions} positions"
    )


def infer_vocabulary_size(state_dict):
    """The head's vocabulary size in a checkpoint, or `None` without head."""
    tower, head, buffers, _ = split_state_dict(normalize_state_dict(state_dict))
    if "text_projection.weight" in head:
        return int(head["text_projection.weight"].shape[0])
    if "cap_fq" in buffers:
        return int(np.asarray(buffers["cap_fq"]).size)
    return None


def _head_pairs(token_head):
    """`(checkpoint key, keras variable, transform)` of the `MixClsHead`."""
    pairs = []
    for i, block in enumerate(token_head.mlp_blocks):
        pairs += layer_norm_pairs(f"mlps.{i}.c_norm", block.norm)
        pairs += dense_pairs(f"mlps.{i}.c_fc", block.fc)
        pairs += dense_pairs(f"mlps.{i}.c_proj", block.proj)
    pairs += layer_norm_pairs("ln_mlp", token_head.norm)
    pairs += dense_pairs("text_projection", token_head.classifier)
    return pairs


def _split_model(model):
    """`(backbone, token_head or None, idf_statistics or None)`."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        backbone = model
    if not hasattr(backbone, "patch_embedding"):
        raise TypeError(
            f"{type(model).__name__} is not a SuperClassClassifier or "
            f"SuperClassBackbone (a ViT with `patch_embedding`); OpenCLIP "
            f"checkpoints only load into those."
        )
    head = getattr(model, "token_head", None) if backbone is not model else None
    statistics = (
        getattr(model, "idf_statistics", None)
        if backbone is not model
        else None
    )
    return backbone, head, statistics


def load_reference_weights(model, state_dict_or_path, strict=True):
    """Loads an OpenCLIP / SuperClass PyTorch checkpoint into a Keras model.

    The checkpoint may be an OpenCLIP vision tower, a full OpenCLIP CLIP
    state dict (`visual.` prefix; the text tower is ignored) or a SuperClass
    checkpoint (`visual.` tower, `text_decoder.` head, `cap_fq` and
    `num_samples` buffers), with or without DDP's `module.` prefix, bare or
    inside `{"state_dict": ...}`. Layouts are converted (conv OIHW -> HWIO,
    `nn.Linear` `(out, in)` -> `(in, out)`, the stacked q, k, v
    `in_proj_weight` `(3W, W)` -> the fused `(W, 3W)` kernel). A position
    table learned for another grid is resized bilinearly. An OpenCLIP
    `visual.proj` (CLIP's image projection) is skipped: SuperClass has no
    projection. Everything is checked before any weight is written, so a
    failed load leaves the model unchanged.

    The number of attention heads is not stored in a state dict: build
    the model with the checkpoint's (OpenCLIP uses `width / 64`).

    An `ImageTextModel` takes a whole OpenCLIP `CLIP` / `CustomTextCLIP`
    state dict instead (both towers, projections, `logit_scale`): see
    `keras_superclass.convert.openclip_clip.load_clip_weights`.

    Args:
        model: a `SuperClassClassifier` (tower, head and IDF statistics),
            a bare `SuperClassBackbone` (tower only) or an `ImageTextModel`.
        state_dict_or_path: a `{name: tensor}` dict (torch tensors or
            arrays) or the path of a `.pt` / `.pth` / `.bin` (read with
            `torch.load(weights_only=True)`), `.safetensors` or `.npz` file.
        strict: raise on model weights the checkpoint lacks and on
            checkpoint entries nothing matches (as `torch`'s
            `load_state_dict`). With `False` they are reported and skipped;
            missing weights keep their initialisation (e.g. a fresh head on
            top of an OpenCLIP tower).

    Returns:
        A `ConversionReport`.

    Example (skipped in the doctests: it needs a downloaded SuperClass
    ViT-B/16 checkpoint):
    >>> from keras_superclass.models import SuperClassClassifier
    >>> model = SuperClassClassifier.from_preset(
    ...     "superclass_vit_b16"
    ... )  # doctest: +SKIP
    >>> report = load_reference_weights(
    ...     model, "superclass_b16.pt"
    ... )  # doctest: +SKIP
    >>> len(report.missing)  # doctest: +SKIP
    0
    """
    if hasattr(model, "text_encoder"):  # An ImageTextModel: both towers.
        from keras_superclass.convert.openclip_clip import load_clip_weights

        return load_clip_weights(model, state_dict_or_path, strict=strict)
    state_dict = normalize_state_dict(state_dict_or_path)
    tower, head, buffers, ignored = split_state_dict(state_dict)
    backbone, token_head, statistics = _split_model(model)
    report = ConversionReport(ignored=sorted(ignored))
    if not tower:
        raise ValueError(
            "The checkpoint holds no vision tower: expected OpenCLIP names "
            "such as 'conv1.weight' or 'visual.conv1.weight'; found "
            f"{few_keys(state_dict)}."
        )
    for key in _IGNORED_TOWER_KEYS:
        if key in tower:
            shape = tower.pop(key).shape
            report.ignored.append(key)
            if int(np.prod(shape)):
                report.notes.append(
                    f"Skipped the tower's '{key}' {tuple(shape)}: CLIP's "
                    f"image projection, which SuperClass does not use."
                )

    # Pair every model weight with its checkpoint entry.
    pairs = [("tower", *p) for p in tower_pairs(backbone)]
    if token_head is not None:
        pairs += [("head", *p) for p in _head_pairs(token_head)]
    elif head:
        report.ignored += [_HEAD_PREFIX + k for k in head]
        report.notes.append("Skipped the head: the model is a bare backbone.")
        head = {}
    sources = {"tower": tower, "head": head}
    prefixes = {"tower": "", "head": _HEAD_PREFIX}
    if any(k.startswith(_TOWER_PREFIX) for k in state_dict):
        prefixes["tower"] = _TOWER_PREFIX

    if token_head is not None and "text_projection.weight" in head:
        ckpt_vocab = head["text_projection.weight"].shape[0]
        if ckpt_vocab != token_head.vocabulary_size:
            raise ValueError(
                f"The checkpoint's head predicts {ckpt_vocab} classes but "
                f"the model's head has {token_head.vocabulary_size}. Build "
                f"the model with vocabulary_size={ckpt_vocab} (CLI: "
                f"--vocabulary-size {ckpt_vocab}) so the tokenizer matches."
            )

    missing = [
        prefixes[part] + key
        for part, key, _, _ in pairs
        if key not in sources[part]
    ]
    used = {(part, key) for part, key, _, _ in pairs}
    unexpected = [
        prefixes[part] + key
        for part in ("tower", "head")
        for key in sources[part]
        if (part, key) not in used
    ]
    if statistics is not None:
        missing += [b for b in _BUFFERS if b not in buffers]
    elif buffers:
        report.ignored += sorted(buffers)
        buffers = {}

    hint = (
        f"The checkpoint looks like a ViT with {describe_tower(tower)}; "
        f"the model has {_describe_model(backbone)}. Build the model with "
        f"the checkpoint's size."
    )
    only_head_missing = not unexpected and all(
        m.startswith(_HEAD_PREFIX) or m in _BUFFERS for m in missing
    )
    advice = hint
    if missing and only_head_missing:
        advice = (
            "The checkpoint has no SuperClass head (an OpenCLIP tower or "
            "CLIP model); pass strict=False (CLI: --no-strict) to load "
            "the tower and keep the head's initialisation."
        )
    check_names(report, missing, unexpected, advice, strict)

    # Convert and check every shape before writing anything.
    updates = []
    for part, key, variable, transform in pairs:
        if key not in sources[part]:
            continue
        value = transform(sources[part][key])
        target = tuple(variable.shape)
        if key == "positional_embedding" and value.shape != target:
            value = fit_positions(value, backbone, report, hint)
        if tuple(value.shape) != target:
            raise ValueError(
                f"Shape mismatch for '{prefixes[part] + key}': the "
                f"checkpoint has {tuple(sources[part][key].shape)} (as "
                f"{tuple(value.shape)} in Keras layout) but the model "
                f"expects {target}. "
                + (
                    "Likely a different vocabulary: build the model with "
                    "the checkpoint's vocabulary_size."
                    if part == "head" and key.startswith("text_projection")
                    else hint
                )
            )
        updates.append((variable, value))
        report.loaded.append(prefixes[part] + key)

    statistics_values = None
    if statistics is not None and buffers and "cap_fq" in buffers:
        cap_fq = np.asarray(buffers["cap_fq"], dtype=np.float64).reshape(-1)
        if cap_fq.size != statistics.vocabulary_size:
            raise ValueError(
                f"The checkpoint's IDF statistics 'cap_fq' cover "
                f"{cap_fq.size} classes but the model's vocabulary has "
                f"{statistics.vocabulary_size}. Build the model with "
                f"vocabulary_size={cap_fq.size}."
            )
        num_samples = np.asarray(
            buffers.get("num_samples", 0.0), dtype=np.float64
        ).reshape(-1)
        if num_samples.size != 1:
            raise ValueError(
                f"'num_samples' must hold one value, got shape "
                f"{tuple(np.shape(buffers['num_samples']))}."
            )
        statistics_values = (cap_fq, num_samples[0])
        report.loaded += [b for b in _BUFFERS if b in buffers]

    for variable, value in updates:
        variable.assign(np.asarray(value, dtype=variable.dtype))
    if statistics_values is not None:
        statistics.set_statistics(*statistics_values)
    for note in report.notes:
        logger.info(note)
    return report
