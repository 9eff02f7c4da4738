"""Layer-wise learning-rate decay, the ViT fine-tuning recipe (BEiT, MAE).

Layers are numbered from the input: 0 for the embeddings (patch embedding,
class token, positions, `ln_pre`; a CNN's stem), `i` for block `i` (1 to
`L`) and `L + 1` for everything after the last block (final norm, pooling,
head). A variable of layer `i` learns at `decay ** (L + 1 - i)` times the
rate: the head at the full rate, the embeddings at the smallest.

`LayerDecayAdamW` applies the multipliers inside the optimizer update (its
`update_step` and weight decay), so one code path serves jax, tensorflow
and torch.
"""

import keras


def encoder_layer_groups(backbone):
    """The backbone's variables from the input up: `[embeddings, block_1,
    ..., block_L]`, each a list of variables.

    Supports this project's encoders: the ViT (`SuperClassBackbone`, also
    CatLIP's) and CRU-Net (stem, then each residual unit; factors shared
    by several units belong to the first of them).
    """
    if hasattr(backbone, "transformer_blocks"):
        embeddings = backbone.patch_embedding.trainable_variables
        embeddings = embeddings + backbone.ln_pre.trainable_variables
        blocks = backbone.transformer_blocks
    elif hasattr(backbone, "stage_blocks"):
        embeddings = backbone.stem_conv.trainable_variables
        embeddings = embeddings + backbone.stem_bn.trainable_variables
        blocks = [unit for units in backbone.stage_blocks for unit in units]
    else:
        raise ValueError(
            f"Layer-wise decay does not know the blocks of "
            f"{type(backbone).__name__}; use a SuperClassBackbone or a "
            f"CRUNetBackbone, or compile with layer_decay=None."
        )
    return [list(embeddings)] + [list(b.trainable_variables) for b in blocks]


def layer_decay_multipliers(model, backbone, decay):
    """`[(variable, multiplier)]` for every trainable variable of `model`.

    Args:
        model: the model being trained (its trainable variables).
        backbone: its encoder, whose blocks set the layer ids.
        decay: the per-layer factor (0.65 to 0.75 in BEiT / MAE); 1.0
            gives every variable the full rate.
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(
            f"`layer_decay` must be in (0, 1], got {decay}; 0.75 is the "
            f"usual ViT-B value, 1.0 turns the decay off."
        )
    groups = encoder_layer_groups(backbone)
    num_layers = len(groups) - 1
    layer_of = {}
    for layer_id, variables in enumerate(groups):
        for variable in variables:
            layer_of.setdefault(id(variable), layer_id)
    return [
        (
            v,
            float(
                decay ** (num_layers + 1 - layer_of.get(id(v), num_layers + 1))
            ),
        )
        for v in model.trainable_variables
    ]


@keras.saving.register_keras_serializable(package="keras_superclass")
class LayerDecayAdamW(keras.optimizers.AdamW):
    """AdamW with a learning-rate multiplier per variable.

    Each variable's update (the Adam step and the decoupled weight decay,
    as in PyTorch's AdamW, which BEiT and MAE use with per-group rates)
    uses `learning_rate * multiplier`. Variables without one use the full
    rate. The multipliers are bound to variables, like Keras's
    `exclude_from_weight_decay`, so they are not part of the config.

    Args:
        **kwargs: `keras.optimizers.AdamW` arguments.

    Example:
    >>> model = keras.Sequential([keras.layers.Dense(2), keras.layers.Dense(1)])
    >>> model.build((None, 3))
    >>> optimizer = LayerDecayAdamW(learning_rate=1e-3)
    >>> optimizer.set_learning_rate_multipliers(
    ...     [(v, 0.5) for v in model.layers[0].trainable_variables]
    ... )
    >>> optimizer.learning_rate_multiplier(model.layers[0].kernel)
    0.5
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._multipliers = {}

    def set_learning_rate_multipliers(self, pairs):
        """Sets `(variable, multiplier)` pairs (e.g. from
        `layer_decay_multipliers`)."""
        for variable, multiplier in pairs:
            self._multipliers[self._var_key(variable)] = float(multiplier)

    def learning_rate_multiplier(self, variable):
        """The multiplier of `variable` (1.0 if it has none)."""
        return self._multipliers.get(self._var_key(variable), 1.0)

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self.learning_rate_multiplier(variable)
        learning_rate = keras.ops.cast(learning_rate, variable.dtype)
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        if self.weight_decay is not None and self._use_weight_decay(variable):
            # Decoupled decay at this variable's own rate; done here rather
            # than in `_apply_weight_decay` so tf.distribute runs it per
            # replica like the update.
            wd = keras.ops.cast(self.weight_decay, variable.dtype)
            variable.assign(variable - variable * wd * learning_rate)
        super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        # Applied per variable in `update_step`, at its own rate.
        return
