"""The `distribution` section of a training config and its checks.

```yaml
distribution:
  kind: auto            # auto | none | data | model
  mesh_shape: null      # e.g. [2, 4]: 2-way data x 4-way model parallel
  axis_names: [batch, model]
  model_parallel_weights:   # [regex of a weight path, its axes]
    - ['token_head/classifier/kernel', [null, model]]
  multi_host: auto      # auto | true | false
  num_devices: null     # use only the first N devices (one process)
```

- `auto`: data parallel over every visible device when there are several
  (or several processes), else one device.
- `data`: `keras.distribution.DataParallel`-style replication; the batch
  axis is split over `mesh_shape` (default: every device).
- `model`: `ModelParallel` on a `(batch, model)` mesh; the weights matching
  `model_parallel_weights` are split over the model axis, all others are
  replicated. `mesh_shape` defaults to `[1, devices]`.
- `multi_host`: `auto` joins a multi-process run when the launcher set
  `KERAS_DISTRIBUTION_JOB_ADDRESSES` / `KERAS_DISTRIBUTION_NUM_PROCESSES`
  / `KERAS_DISTRIBUTION_PROCESS_ID`; `true` always calls
  `keras.distribution.initialize()` (e.g. Cloud TPU pods, which need no
  variables); `false` never does.

Pure Python: importing this module imports no backend.
"""

import re

KINDS = ("auto", "none", "data", "model")

# The token head (768 x 49,408 for B/16) and the MLP kernels of the ViT
# blocks and of the head's residual MLPs, Megatron style: the widening
# kernel split on its output axis, the narrowing one on its input axis, so
# each block needs one all-reduce. Paths are `variable.path`
# (`keras.distribution.LayoutMap` matches them with `re.fullmatch`).
MODEL_PARALLEL_WEIGHTS = [
    [r"(.*/)?token_head/classifier/kernel", [None, "model"]],
    [r"(.*/)?token_head/classifier/bias", ["model"]],
    [r"(.*/)?block_\d+/c_fc/kernel", [None, "model"]],
    [r"(.*/)?block_\d+/c_fc/bias", ["model"]],
    [r"(.*/)?block_\d+/c_proj/kernel", ["model", None]],
    [r"(.*/)?mlp_block_\d+/fc/kernel", [None, "model"]],
    [r"(.*/)?mlp_block_\d+/fc/bias", ["model"]],
    [r"(.*/)?mlp_block_\d+/proj/kernel", ["model", None]],
]

DEFAULTS = {
    "kind": "auto",
    "mesh_shape": None,
    "axis_names": ["batch", "model"],
    "model_parallel_weights": [list(entry) for entry in MODEL_PARALLEL_WEIGHTS],
    "multi_host": "auto",
    "num_devices": None,
}


def _check_mesh_shape(value):
    if value is None:
        return True
    return (
        isinstance(value, list | tuple)
        and 1 <= len(value) <= 2
        and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for v in value
        )
    )


def _check_axis_names(value):
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, str) and v for v in value)
        and value[0] != value[1]
    )


def _check_weights(value):
    if not isinstance(value, list | tuple):
        return False
    for entry in value:
        if not (isinstance(entry, list | tuple) and len(entry) == 2):
            return False
        pattern, axes = entry
        if not isinstance(pattern, str) or not isinstance(axes, list | tuple):
            return False
        if not all(a is None or isinstance(a, str) for a in axes):
            return False
        try:
            re.compile(pattern)
        except re.error:
            return False
    return True


# Rules in the format of `training.config_checks.RULES`.
RULES = {
    "distribution.kind": ("choice", KINDS),
    "distribution.mesh_shape": (
        "check",
        _check_mesh_shape,
        lambda: "null or a list of 1 or 2 positive integers, e.g. [2, 4]",
    ),
    "distribution.axis_names": (
        "check",
        _check_axis_names,
        lambda: "two different axis names, e.g. [batch, model]",
    ),
    "distribution.model_parallel_weights": (
        "check",
        _check_weights,
        lambda: (
            "a list of [regex, axes] pairs, e.g. "
            "[['token_head/classifier/kernel', [null, model]]]"
        ),
    ),
    "distribution.multi_host": ("choice", ("auto", True, False)),
    "distribution.num_devices": (
        "check",
        lambda v: v is None or (type(v) is int and v >= 1),
        lambda: "null or a positive integer",
    ),
}


def check_section(section):
    """`section` over `DEFAULTS`, checked; a `ValueError` names the key.

    For the Python API (`activate`); configs are checked by `load_config`.
    """
    section = {**DEFAULTS, **(section or {})}
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"Unknown distribution key(s) {unknown}; known keys: "
            f"{sorted(DEFAULTS)}."
        )
    for key, rule in RULES.items():
        name = key.split(".", 1)[1]
        value = section[name]
        if rule[0] == "choice":
            ok = any(type(value) is type(c) and value == c for c in rule[1])
            expected = f"one of {rule[1]}"
        else:
            ok = rule[1](value)
            expected = rule[2]()
        if not ok:
            raise ValueError(f"'{key}' must be {expected}, got {value!r}.")
    return section


def check_layout_axes(section):
    """Every axis a `model_parallel_weights` entry names is a mesh axis."""
    names = list(section["axis_names"])
    for pattern, axes in section["model_parallel_weights"]:
        unknown = [a for a in axes if a is not None and a not in names]
        if unknown:
            raise ValueError(
                f"'distribution.model_parallel_weights' entry {pattern!r} "
                f"names the axes {unknown}, which are not in "
                f"'distribution.axis_names' {names}. Use those names (or "
                f"null for a replicated axis)."
            )
