"""JAX: `keras.distribution` (DataParallel, ModelParallel, multi-host).

Backend-specific module: imported only when `KERAS_BACKEND=jax`.

Under `keras.distribution` a training step is one SPMD program over the
global batch, so the loss, the online IDF statistics (the batch mean of the
multi-hot labels is over the global batch: the all-reduced mean of the
replicas' means, as the reference computes it), gradient accumulation and
the learning-rate schedule are those of one device at the same global
batch; only the order of floating-point sums differs.

Each process reads its own share of the shards (`auto_shard_dataset=False`)
at its share of the global batch; Keras assembles the global batch from
the processes' parts (`jax.make_array_from_process_local_data`).
"""

import contextlib
import math
import os

import jax
import keras

from keras_superclass.distribution.base import RunDistribution
from keras_superclass.distribution.config import check_layout_axes

# Set by the launcher on every process of a multi-host run; see
# `keras.distribution.initialize`.
MULTI_HOST_ENV = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


def initialize_multi_host(setting="auto"):
    """Joins a multi-process run (`keras.distribution.initialize`).

    `"auto"`: only when the launcher set a `KERAS_DISTRIBUTION_*` variable;
    `True`: always (e.g. Cloud TPU pods, where JAX finds the peers itself);
    `False`: never. Must run before any JAX computation.
    """
    wanted = setting is True or (
        setting == "auto" and any(k in os.environ for k in MULTI_HOST_ENV)
    )
    if not wanted or jax.distributed.is_initialized():
        return
    try:
        keras.distribution.initialize()
    except RuntimeError as error:
        raise RuntimeError(
            f"Joining the multi-process run failed ({error}). Activate the "
            f"distribution before any other Keras or JAX work (the trainer "
            f"does), and set {', '.join(MULTI_HOST_ENV)} on every process."
        ) from error


def model_parallel_layout_map(device_mesh, weights):
    """A `keras.distribution.LayoutMap` from `[regex, axes]` pairs."""
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in weights:
        layout_map[pattern] = tuple(axes)
    return layout_map


def _mesh_shape(section, kind, num_devices):
    shape = section["mesh_shape"]
    if shape is None:
        return [num_devices] if kind == "data" else [1, num_devices]
    shape = list(shape)
    rank = 1 if kind == "data" else 2
    if kind == "data" and len(shape) == 2 and shape[1] == 1:
        shape = shape[:1]
    if len(shape) != rank or math.prod(shape) != num_devices:
        example = [num_devices] if rank == 1 else [1, num_devices]
        raise ValueError(
            f"'distribution.mesh_shape' {section['mesh_shape']} does not fit "
            f"distribution.kind {kind!r} on {num_devices} devices: it needs "
            f"{rank} axis(es) whose product is {num_devices}, e.g. {example} "
            f"(or null for that default)."
        )
    return shape


class JaxRunDistribution(RunDistribution):
    """A `RunDistribution` around a `keras.distribution.Distribution`."""

    def __init__(self, keras_distribution, **kwargs):
        super().__init__(**kwargs)
        self.keras_distribution = keras_distribution

    @contextlib.contextmanager
    def scope(self):
        with self.keras_distribution.scope():
            try:
                yield self
            except ValueError as error:
                # JAX's wording changed across releases.
                words = ("divisible", "evenly divide")
                if not any(w in str(error) for w in words):
                    raise
                raise ValueError(
                    f"{error}\nA weight or batch does not split evenly over "
                    f"the device mesh ({self.description}): change "
                    f"'distribution.mesh_shape', the sizes in "
                    f"'distribution.model_parallel_weights' or the batch."
                ) from error


def activate(section):
    """The `RunDistribution` a checked `distribution` section asks for."""
    initialize_multi_host(section["multi_host"])
    devices = keras.distribution.list_devices()
    processes = jax.process_count()
    wanted = section["num_devices"]
    if wanted is not None:
        if wanted > len(devices) or processes > 1:
            raise ValueError(
                f"'distribution.num_devices' is {wanted}, but this run has "
                f"{len(devices)} devices in {processes} process(es); it "
                f"takes at most {len(devices)} in a one-process run. Remove "
                f"the key to use every device."
            )
        devices = devices[:wanted]
    num_devices = len(devices)
    kind = section["kind"]
    if kind == "auto":
        kind = "data" if num_devices > 1 else "none"
    if kind == "none":
        if processes > 1:
            raise ValueError(
                f"distribution.kind 'none' in a run of {processes} "
                f"processes: each would train alone. Use 'data' or 'auto'."
            )
        return RunDistribution(description=f"one device ({devices[0]})")
    shape = _mesh_shape(section, kind, num_devices)
    names = list(section["axis_names"])
    mesh = keras.distribution.DeviceMesh(
        shape=tuple(shape), axis_names=names[: len(shape)], devices=devices
    )
    if kind == "data":
        distribution = keras.distribution.DataParallel(
            device_mesh=mesh, auto_shard_dataset=False
        )
        what = f"data parallel over {num_devices} {devices[0].split(':')[0]}"
    else:
        check_layout_axes(section)
        distribution = keras.distribution.ModelParallel(
            layout_map=model_parallel_layout_map(
                mesh, section["model_parallel_weights"]
            ),
            batch_dim_name=names[0],
            auto_shard_dataset=False,
        )
        what = (
            f"model parallel, mesh {names[0]}={shape[0]} x "
            f"{names[1]}={shape[1]} over {num_devices} "
            f"{devices[0].split(':')[0]}"
        )
    replicas = distribution.num_model_replicas
    return JaxRunDistribution(
        distribution,
        kind=kind,
        num_replicas=replicas,
        num_devices=num_devices,
        num_processes=processes,
        process_index=jax.process_index(),
        data_shard_count=min(replicas, processes),
        data_shard_index=distribution.data_shard_id,
        description=f"{what} devices, {processes} process(es)",
    )
