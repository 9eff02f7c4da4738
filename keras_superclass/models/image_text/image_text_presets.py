"""Image-text architecture presets (random initialisation).

OpenCLIP's layouts: the ViT image tower of `superclass_presets` with
class-token pooling (`ViT-B-16`) or mean pooling (`ViT-B-16-avg`, the image
tower of the reference LiT configs), and OpenCLIP's text tower (CLIP BPE,
context 77). Load real weights with `keras_superclass.convert`.
"""

from keras_superclass.models.superclass.superclass_presets import (
    CLIP_VOCABULARY_SIZE,
)
from keras_superclass.models.superclass.superclass_presets import _vit


def _text(width, heads, layers=12):
    return {
        "vocabulary_size": CLIP_VOCABULARY_SIZE,
        "sequence_length": 77,
        "hidden_dim": width,
        "num_layers": layers,
        "num_heads": heads,
        "mlp_dim": 4 * width,
    }


def _preset(description, vision, text, embed_dim, pooling):
    return {
        "metadata": {
            "description": description,
            "official_name": "OpenCLIP",
            "path": "image_text",
        },
        "backbone": {**_vit(*vision), "pooling": pooling},
        "task": {"text_encoder": text, "embed_dim": embed_dim},
    }


# (width, layers, heads, patch) of the image towers.
_B16, _S16 = (768, 12, 12, 16), (384, 12, 6, 16)
_L16, _L14 = (1024, 24, 16, 16), (1024, 24, 16, 14)

image_text_presets = {
    "openclip_vit_ti16": _preset(
        "ViT-Ti/16 + 256-wide text tower: small, for tests and CPU demos.",
        (192, 12, 3, 16),
        _text(256, 4, 6),
        256,
        "avg",
    ),
    "openclip_vit_s16": _preset(
        "OpenCLIP ViT-S-16 (class token) + text 384 x 12.",
        _S16,
        _text(384, 6),
        384,
        "cls",
    ),
    "openclip_vit_b16": _preset(
        "OpenCLIP ViT-B-16 (class token) + text 512 x 12.",
        _B16,
        _text(512, 8),
        512,
        "cls",
    ),
    "openclip_vit_b16_avg": _preset(
        "ViT-B-16-avg (mean pooling, the reference LiT tower) + text 512 x 12.",
        _B16,
        _text(512, 8),
        512,
        "avg",
    ),
    "openclip_vit_l16_avg": _preset(
        "ViT-L/16 (mean pooling) + text 768 x 12.",
        _L16,
        _text(768, 12),
        768,
        "avg",
    ),
    "openclip_vit_l14_avg": _preset(
        "ViT-L/14 (mean pooling) + text 768 x 12.",
        _L14,
        _text(768, 12),
        768,
        "avg",
    ),
}
