"""CRU-Net architecture presets.

Architectures only: `from_preset(name)` builds the model with random
initialisation (the reference weights are MXNet checkpoints). Preset
directories written by `save_to_preset` carry weights.

A stage is a pre-activation ResNeXt stage where `cru_dims` is 0, and a
Collective Residual Unit stage of collective dimension `cru_dims[i]` where it
is positive; `cru_share_units[i]` consecutive units share one set of
factors (0: the whole stage).
"""

IMAGENET_CLASSES = 1000


def _preset(description, backbone, num_classes=IMAGENET_CLASSES):
    return {
        "metadata": {
            "description": description,
            "official_name": "CRU-Net",
            "path": "crunet",
        },
        "backbone": backbone,
        "task": {"num_classes": num_classes},
    }


def _imagenet_config(stage_units, cru_dims, cru_share_units):
    return {
        "image_shape": [224, 224, 3],
        "stem_filters": 64,
        "stage_units": list(stage_units),
        "stage_filters": [256, 512, 1024, 2048],
        "stage_widths": [128, 256, 512, 1024],
        "cardinality": 32,
        "cru_dims": list(cru_dims),
        "cru_share_units": list(cru_share_units),
        "share": True,
    }


backbone_presets = {
    "crunet56": _preset(
        "CRU-Net-56 @x14 (32x4d): units 3/4/6/3, the 14x14 stage is CRU "
        "with D=640 and one shared set; 25.6M parameters with a 1000-way "
        "head.",
        _imagenet_config((3, 4, 6, 3), (0, 0, 640, 0), (0, 0, 6, 0)),
    ),
    "crunet116": _preset(
        "CRU-Net-116 @x28x14 (32x4d): units 3/6/18/3, CRU stages at 28x28 "
        "(D=352, one set) and 14x14 (D=704, three sets of 6 units); 43.7M "
        "parameters with a 1000-way head.",
        _imagenet_config((3, 6, 18, 3), (0, 352, 704, 0), (0, 6, 6, 0)),
    ),
    "crunet_tiny": _preset(
        "Tiny CRU-Net for tests and CPU demos: 32x32 inputs, widths /8, "
        "two CRU stages (the second with two shared sets).",
        {
            "image_shape": [32, 32, 3],
            "stem_filters": 16,
            "stage_units": [1, 2, 4, 1],
            "stage_filters": [32, 64, 128, 256],
            "stage_widths": [16, 32, 64, 128],
            "cardinality": 4,
            "cru_dims": [0, 24, 48, 0],
            "cru_share_units": [0, 0, 2, 0],
            "share": True,
        },
        num_classes=10,
    ),
}
