"""Where each weight of an OpenCLIP ViT goes in the Keras ViT, and how its
layout changes (PyTorch -> Keras); shared by the SuperClass and the CLIP
converters.

A *pair* is `(checkpoint key, Keras variable, transform)`: the loaders
assign `transform(checkpoint[key])` to the variable.
"""

import numpy as np
from keras import ops


def dense_kernel(weight):
    """`nn.Linear` weight `(out, in)` -> Dense kernel `(in, out)`."""
    return np.ascontiguousarray(weight.T)


def conv_kernel(weight):
    """Conv weight OIHW -> Keras HWIO."""
    return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)))


def unchanged(value):
    """Weights whose layout is the same in both frameworks."""
    return value


def resize_positions(table, source_grid, target_grid, num_prefix):
    """Bilinearly resizes the patch part of a `(N, W)` position table."""
    width = table.shape[-1]
    prefix, grid = table[:num_prefix], table[num_prefix:]
    grid = grid.reshape(1, *source_grid, width).astype("float32")
    grid = ops.image.resize(
        grid, target_grid, interpolation="bilinear", antialias=False
    )
    grid = np.asarray(ops.convert_to_numpy(grid)).reshape(-1, width)
    return np.concatenate([prefix, grid.astype(table.dtype)], axis=0)


def square_grid(num_patches):
    """`(side, side)` of a square patch grid, or `None`."""
    side = int(round(num_patches**0.5))
    return (side, side) if side * side == num_patches else None


def layer_norm_pairs(source, layer):
    return [
        (f"{source}.weight", layer.gamma, unchanged),
        (f"{source}.bias", layer.beta, unchanged),
    ]


def dense_pairs(source, layer):
    pairs = [(f"{source}.weight", layer.kernel, dense_kernel)]
    if layer.use_bias:
        pairs.append((f"{source}.bias", layer.bias, unchanged))
    return pairs


def tower_pairs(backbone):
    """`(checkpoint key, keras variable, transform)` of the vision tower."""
    if getattr(backbone, "stem", "patch") != "patch":
        raise ValueError(
            f"Only the single-conv patch stem of OpenCLIP can be loaded; "
            f"this backbone uses stem={backbone.stem!r}. Build it with "
            f"stem='patch'."
        )
    if backbone.pooling == "map":
        raise ValueError(
            "OpenCLIP SuperClass towers pool by averaging; a backbone with "
            "pooling='map' has an attention-pool head the checkpoint lacks."
        )
    embedding = backbone.patch_embedding
    pairs = [("conv1.weight", embedding.projection.kernel, conv_kernel)]
    if backbone.use_class_token:
        pairs.append(("class_embedding", embedding.class_embedding, unchanged))
    pairs.append(
        ("positional_embedding", embedding.positional_embedding, unchanged)
    )
    pairs += layer_norm_pairs("ln_pre", backbone.ln_pre)
    pairs += blocks_pairs(backbone.transformer_blocks)
    pairs += layer_norm_pairs("ln_post", backbone.ln_post)
    return pairs


def blocks_pairs(blocks):
    """Pairs of OpenCLIP `transformer.resblocks.{i}` (either tower)."""
    pairs = []
    for i, block in enumerate(blocks):
        p = f"transformer.resblocks.{i}"
        pairs += layer_norm_pairs(f"{p}.ln_1", block.ln_1)
        in_proj = block.attn.in_proj
        pairs += [
            (f"{p}.attn.in_proj_weight", in_proj.kernel, dense_kernel),
            (f"{p}.attn.in_proj_bias", in_proj.bias, unchanged),
        ]
        pairs += dense_pairs(f"{p}.attn.out_proj", block.attn.out_proj)
        pairs += layer_norm_pairs(f"{p}.ln_2", block.ln_2)
        pairs += dense_pairs(f"{p}.mlp.c_fc", block.c_fc)
        pairs += dense_pairs(f"{p}.mlp.c_proj", block.c_proj)
    return pairs


def fit_positions(table, backbone, report, hint):
    """A checkpoint's position table resized to the backbone's grid; notes
    the resize in `report`, raises with `hint` when it cannot be done."""
    prefix = int(backbone.use_class_token)
    source = square_grid(table.shape[0] - prefix)
    target = tuple(backbone.position_grid_size)
    if source is None or table.shape[1] != backbone.hidden_dim:
        raise ValueError(
            f"Cannot resize the checkpoint's position table "
            f"{tuple(table.shape)} to the model's grid {target}: it is not "
            f"a square grid of width {backbone.hidden_dim}. {hint}"
        )
    report.notes.append(
        f"Resized the position table bilinearly from a {source[0]}x"
        f"{source[1]} grid to {target[0]}x{target[1]}."
    )
    return resize_positions(table, source, target, prefix)
