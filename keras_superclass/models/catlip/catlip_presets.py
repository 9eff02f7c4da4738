"""CatLIP architecture presets (corenet ViTs with the conv stem).

No weights are bundled: `from_preset(name)` builds the architecture with
random initialisation; preset directories written by `save_to_preset`
carry weights. `metadata["recipe"]` holds the reference peak learning rate.
"""

CATLIP_VOCABULARY_SIZE = 24320


def _vit(width, layers, heads, image_size=224):
    return {
        "image_shape": [image_size, image_size, 3],
        "patch_size": 16,
        "num_layers": layers,
        "num_heads": heads,
        "hidden_dim": width,
        "mlp_dim": 4 * width,
        "pooling": "cls",
        "use_class_token": True,
        "layer_norm_epsilon": 1e-6,
        "stem": "conv",
    }


def _preset(description, width, layers, heads, learning_rate):
    return {
        "metadata": {
            "description": description,
            "official_name": "CatLIP",
            "path": "catlip",
            "recipe": {"learning_rate": learning_rate},
        },
        "backbone": _vit(width, layers, heads),
        "task": {"vocabulary_size": CATLIP_VOCABULARY_SIZE},
    }


backbone_presets = {
    "catlip_vit_ti16": _preset(
        "ViT-Ti/16 (192 x 12, 3 heads), conv stem: for tests and CPU demos.",
        192,
        12,
        3,
        1e-3,
    ),
    "catlip_vit_b16": _preset(
        "ViT-B/16 (768 x 12), conv stem.", 768, 12, 12, 1e-3
    ),
    "catlip_vit_l16": _preset(
        "ViT-L/16 (1024 x 24), conv stem.", 1024, 24, 16, 6e-4
    ),
    "catlip_vit_h16": _preset(
        "ViT-H/16 (1280 x 32), conv stem.", 1280, 32, 16, 4e-4
    ),
}
