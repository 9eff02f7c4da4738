"""SuperClass architecture presets.

No official SuperClass weights were released, so these presets are
architectures: `from_preset(name)` builds the model with random
initialisation. Preset directories written by `save_to_preset` carry
weights.
"""

CLIP_VOCABULARY_SIZE = 49408


def _vit(width, layers, heads, patch, image_size=224):
    return {
        "image_shape": [image_size, image_size, 3],
        "patch_size": patch,
        "num_layers": layers,
        "num_heads": heads,
        "hidden_dim": width,
        "mlp_dim": 4 * width,
        "pooling": "avg",
        "layer_norm_epsilon": 1e-5,
    }


def _preset(description, width, layers, heads, patch):
    return {
        "metadata": {
            "description": description,
            "official_name": "SuperClass",
            "path": "superclass",
        },
        "backbone": _vit(width, layers, heads, patch),
        "task": {"vocabulary_size": CLIP_VOCABULARY_SIZE},
    }


backbone_presets = {
    "superclass_vit_ti16": _preset(
        "ViT-Ti/16 (192 x 12, 3 heads): small, for tests and CPU demos.",
        192,
        12,
        3,
        16,
    ),
    "superclass_vit_s16": _preset("ViT-S/16 (384 x 12).", 384, 12, 6, 16),
    "superclass_vit_b16": _preset("ViT-B/16 (768 x 12).", 768, 12, 12, 16),
    "superclass_vit_l16": _preset("ViT-L/16 (1024 x 24).", 1024, 24, 16, 16),
    "superclass_vit_l14": _preset("ViT-L/14 (1024 x 24).", 1024, 24, 16, 14),
    "superclass_vit_h14": _preset("ViT-H/14 (1280 x 32).", 1280, 32, 16, 14),
}
