"""CRU-Net image encoder (Collective Residual Networks)."""

import keras
from keras_hub.models import Backbone

from keras_superclass.layers.batch_normalization import BatchNormalization
from keras_superclass.models.crunet.crunet_layers import BN_EPSILON
from keras_superclass.models.crunet.crunet_layers import BN_MOMENTUM
from keras_superclass.models.crunet.crunet_layers import CollectiveResidualUnit
from keras_superclass.models.crunet.crunet_layers import PreActResNeXtUnit
from keras_superclass.models.crunet.crunet_layers import SharedCRUFactors
from keras_superclass.models.crunet.crunet_layers import conv_initializer
from keras_superclass.models.crunet.crunet_presets import backbone_presets
from keras_superclass.utils.presets import check_model_kwargs
from keras_superclass.utils.presets import resolve_preset


def check_stage_config(
    stage_units,
    stage_filters,
    stage_widths,
    cardinality,
    cru_dims,
    cru_share_units,
):
    """Validates the per-stage lists; returns them as lists of ints."""
    lists = {
        "stage_units": stage_units,
        "stage_filters": stage_filters,
        "stage_widths": stage_widths,
        "cru_dims": cru_dims,
        "cru_share_units": cru_share_units,
    }
    lists = {k: [int(v) for v in values] for k, values in lists.items()}
    lengths = {k: len(v) for k, v in lists.items()}
    if len(set(lengths.values())) != 1 or not lengths["stage_units"]:
        raise ValueError(
            f"The per-stage arguments must be non-empty lists of one length "
            f"(one entry per stage), got lengths {lengths}."
        )
    for stage, (units, width, dim, share_units) in enumerate(
        zip(
            lists["stage_units"],
            lists["stage_widths"],
            lists["cru_dims"],
            lists["cru_share_units"],
        ),
        start=1,
    ):
        if units < 1:
            raise ValueError(f"Stage {stage} needs at least one unit.")
        if dim < 0 or share_units < 0:
            raise ValueError(
                f"Stage {stage}: `cru_dims` and `cru_share_units` must be "
                f">= 0 (0 = ResNeXt stage / share across the whole stage)."
            )
        if dim == 0 and width % cardinality:
            raise ValueError(
                f"Stage {stage}: width {width} is not divisible by the "
                f"cardinality {cardinality}."
            )
    return lists


def check_image_shape(image_shape):
    """Validates `(H, W, 3)`; H and W may be `None` (any size)."""
    image_shape = tuple(None if s is None else int(s) for s in image_shape)
    if len(image_shape) != 3 or image_shape[2] is None:
        raise ValueError(
            f"`image_shape` must be (height, width, channels) with known "
            f"channels, got {image_shape}."
        )
    return image_shape


@keras.saving.register_keras_serializable(package="keras_superclass")
class CRUNetBackbone(Backbone):
    """CRU-Net: ResNeXt with Collective Residual Unit stages.

    Stem `7x7/2 conv -> BN -> ReLU -> 3x3/2 max pool`, then stages of
    pre-activation ResNeXt units (`cru_dims[i] == 0`) or Collective Residual
    Units (`cru_dims[i] = D > 0`) whose 1x1 reduction and depthwise 3x3
    kernels are shared by groups of `cru_share_units[i]` consecutive units
    (one `SharedCRUFactors` per group). The first stage keeps the resolution,
    each later one halves it. Head: `BN -> ReLU -> global average pool`.

    Takes float images `(B, H, W, 3)` and returns a dict with
    `"pooled_output"` `(B, stage_filters[-1])` and the stage outputs
    `"stage1"`, `"stage2"`, ... (the pre-activation residual stream at the
    end of each stage; at 224: 56x56x256, 28x28x512, 14x14x1024, 7x7x2048).

    Args:
        image_shape: `(H, W, 3)`; H and W may be `None` for any size.
        stem_filters: channels of the stem convolution.
        stage_units: units per stage.
        stage_filters: output channels per stage (`bw` of CRU stages).
        stage_widths: bottleneck widths of the ResNeXt stages (ignored for
            CRU stages).
        cardinality: groups of the ResNeXt 3x3 convolutions.
        cru_dims: collective dimension `D` per stage, 0 for ResNeXt stages.
        cru_share_units: consecutive units sharing one set of factors per
            CRU stage; 0 shares across the whole stage.
        share: `False` gives every CRU its own factors (the unshared
            counterpart with the same structure).
        dtype: dtype policy, e.g. `"mixed_bfloat16"`.

    Example:
    >>> backbone = CRUNetBackbone.from_preset("crunet_tiny")
    >>> outputs = backbone(keras.ops.zeros((2, 32, 32, 3)))
    >>> tuple(outputs["pooled_output"].shape)
    (2, 256)
    """

    architecture_presets = backbone_presets

    def __init__(
        self,
        image_shape=(224, 224, 3),
        stem_filters=64,
        stage_units=(3, 4, 6, 3),
        stage_filters=(256, 512, 1024, 2048),
        stage_widths=(128, 256, 512, 1024),
        cardinality=32,
        cru_dims=(0, 0, 640, 0),
        cru_share_units=(0, 0, 0, 0),
        share=True,
        dtype=None,
        **kwargs,
    ):
        check_model_kwargs(type(self), kwargs)
        image_shape = check_image_shape(image_shape)
        cardinality = int(cardinality)
        stages = check_stage_config(
            stage_units,
            stage_filters,
            stage_widths,
            cardinality,
            cru_dims,
            cru_share_units,
        )

        # === Layers ===
        self.stem_conv = keras.layers.Conv2D(
            int(stem_filters),
            7,
            strides=2,
            padding="valid",
            use_bias=False,
            kernel_initializer=conv_initializer(),
            dtype=dtype,
            name="stem_conv",
        )
        self.stem_bn = BatchNormalization(
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=dtype,
            name="stem_bn",
        )
        self.stem_pool = keras.layers.MaxPooling2D(
            3, strides=2, padding="valid", dtype=dtype, name="stem_pool"
        )
        self.stage_blocks = []
        self.shared_factors = []
        for index in range(len(stages["stage_units"])):
            units, shared = self._make_stage(
                index, stages, cardinality, share, dtype
            )
            self.stage_blocks.append(units)
            self.shared_factors.extend(shared)
        self.head_bn = BatchNormalization(
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=dtype,
            name="head_bn",
        )
        self.pooling = keras.layers.GlobalAveragePooling2D(
            dtype=dtype, name="pooling"
        )

        # === Functional model ===
        images = keras.Input(shape=image_shape, name="images")
        x = keras.layers.ZeroPadding2D(3, dtype=dtype, name="stem_pad")(images)
        x = self.stem_conv(x)
        x = self.stem_bn(x)
        x = keras.layers.ReLU(dtype=dtype, name="stem_relu")(x)
        # Zero padding is exact before max pooling: the input is post-ReLU.
        x = keras.layers.ZeroPadding2D(1, dtype=dtype, name="stem_pool_pad")(x)
        x = self.stem_pool(x)
        outputs = {}
        for index, units in enumerate(self.stage_blocks, start=1):
            for unit in units:
                x = unit(x)
            outputs[f"stage{index}"] = x
        x = self.head_bn(x)
        x = keras.layers.ReLU(dtype=dtype, name="head_relu")(x)
        outputs = {"pooled_output": self.pooling(x), **outputs}
        super().__init__(inputs=images, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.image_shape = image_shape
        self.stem_filters = int(stem_filters)
        self.stage_units = stages["stage_units"]
        self.stage_filters = stages["stage_filters"]
        self.stage_widths = stages["stage_widths"]
        self.cardinality = cardinality
        self.cru_dims = stages["cru_dims"]
        self.cru_share_units = stages["cru_share_units"]
        self.share = bool(share)

    @staticmethod
    def _make_stage(index, stages, cardinality, share, dtype):
        """Units of stage `index` and the factor sets they share."""
        num_units = stages["stage_units"][index]
        filters = stages["stage_filters"][index]
        dim = stages["cru_dims"][index]
        group = stages["cru_share_units"][index] or num_units
        strides = 1 if index == 0 else 2
        prefix = f"stage{index + 1}"
        units, shared = [], []
        for i in range(num_units):
            unit_kwargs = dict(
                strides=strides if i == 0 else 1,
                project=i == 0,
                dtype=dtype,
                name=f"{prefix}_unit{i + 1}",
            )
            if dim == 0:
                units.append(
                    PreActResNeXtUnit(
                        filters,
                        stages["stage_widths"][index],
                        cardinality=cardinality,
                        **unit_kwargs,
                    )
                )
                continue
            factors = None
            if share:
                if i % group == 0:
                    shared.append(
                        SharedCRUFactors(
                            filters,
                            dim,
                            dtype=dtype,
                            name=f"{prefix}_factors{i // group + 1}",
                        )
                    )
                factors = shared[-1]
            units.append(
                CollectiveResidualUnit(
                    filters, dim, factors=factors, **unit_kwargs
                )
            )
        return units, shared

    @property
    def output_dim(self):
        """Width of `"pooled_output"`."""
        return self.stage_filters[-1]

    def get_config(self):
        config = super().get_config()
        config.update(
            image_shape=list(self.image_shape),
            stem_filters=self.stem_filters,
            stage_units=list(self.stage_units),
            stage_filters=list(self.stage_filters),
            stage_widths=list(self.stage_widths),
            cardinality=self.cardinality,
            cru_dims=list(self.cru_dims),
            cru_share_units=list(self.cru_share_units),
            share=self.share,
        )
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds an architecture preset or loads a preset directory.

        Args:
            preset: a name from `CRUNetBackbone.architecture_presets`
                (random initialisation) or a directory written by
                `save_to_preset`.
            load_weights: load weights from a preset directory.
            **kwargs: config overrides, e.g. `image_shape`, `share` or
                `dtype`.

        Example:
        >>> backbone = CRUNetBackbone.from_preset("crunet_tiny", share=False)
        >>> backbone.image_shape
        (32, 32, 3)
        """
        config = resolve_preset(preset, cls.architecture_presets, cls)
        if config is None:
            return super().from_preset(preset, load_weights, **kwargs)
        return cls(**{**config["backbone"], **kwargs})
