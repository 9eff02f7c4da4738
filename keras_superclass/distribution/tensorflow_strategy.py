"""Data parallelism on the TensorFlow backend with `tf.distribute`.

TensorFlow-specific code (this module is only imported under
`KERAS_BACKEND=tensorflow`). Build and compile the task under
`strategy.scope()`; `model.fit` then runs each step on every replica with
its slice of the global batch, Keras averages the loss over the global
batch and sums the gradients across replicas, and the online IDF
statistics sum their batch counts across replicas (`replica_sum`), so a
run equals a single-device run at the same global batch.

Example (two CPU replicas; on a GPU host `mirrored_strategy()` takes
every visible GPU):

>>> from keras_superclass.distribution import tensorflow_strategy
>>> strategy = tensorflow_strategy.mirrored_strategy(  # doctest: +SKIP
...     num_cpu_devices=2
... )
>>> with strategy.scope():  # doctest: +SKIP
...     model = SuperClassClassifier.from_preset("superclass_vit_ti16")
>>> model.fit(dataset_of_global_batches)  # doctest: +SKIP
"""

import contextlib
import os

import tensorflow as tf

from keras_superclass.distribution.base import RunDistribution
from keras_superclass.distribution.base import UnsupportedDistribution


def split_cpu(num_devices):
    """Makes the host CPU `num_devices` logical devices (for tests, or
    data parallelism over CPU cores); must run before TensorFlow starts.

    Returns:
        The logical CPU device names.
    """
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    wanted = int(num_devices)
    if current is None or len(current) != wanted:
        try:
            tf.config.set_logical_device_configuration(
                cpus[0],
                [tf.config.LogicalDeviceConfiguration()] * wanted,
            )
        except RuntimeError as error:
            raise RuntimeError(
                f"Cannot split the CPU into {wanted} devices: TensorFlow has "
                f"already started ({error}). Call split_cpu() (or "
                f"mirrored_strategy(num_cpu_devices=...)) first thing in the "
                f"process, before any model or tensor is built."
            ) from error
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def mirrored_strategy(devices=None, num_cpu_devices=None):
    """A `tf.distribute.MirroredStrategy` over this host's devices.

    Args:
        devices: device names; default every visible GPU, else the CPU
            devices.
        num_cpu_devices: split the CPU into this many logical devices
            first (see `split_cpu`) and use them (no GPU).

    Returns:
        The strategy; build and compile the task under its `scope()`.
    """
    if num_cpu_devices is not None:
        devices = split_cpu(num_cpu_devices)
    elif devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [
            d.name for d in tf.config.list_logical_devices("CPU")
        ]
    cross_device_ops = None
    if not any("GPU" in d.upper() for d in devices):
        # NCCL (the default on GPUs) has no CPU kernels.
        cross_device_ops = tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(
        devices=list(devices), cross_device_ops=cross_device_ops
    )


def num_replicas():
    """Replicas of the current strategy (1 outside any)."""
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context
        return tf.distribute.get_strategy().num_replicas_in_sync
    return context.num_replicas_in_sync


def replica_sum(x):
    """The sum of `x` over the replicas, called inside a replica step."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    return context.all_reduce(tf.distribute.ReduceOp.SUM, x)


class StrategyRunDistribution(RunDistribution):
    """A `RunDistribution` around a `tf.distribute.Strategy`: one process
    reads global batches, which Keras splits over the replicas."""

    def __init__(self, strategy, **kwargs):
        super().__init__(**kwargs)
        self.strategy = strategy

    @contextlib.contextmanager
    def scope(self):
        with self.strategy.scope():
            yield self


def activate(section):
    """The `RunDistribution` of a checked `distribution` section.

    `data` (or `auto` with several GPUs): `MirroredStrategy` over every
    visible GPU (the first `num_devices`); on a host without GPUs, over the
    CPU split into `mesh_shape[0]` (or `num_devices`) logical devices
    (default 1).
    """
    kind = section["kind"]
    if kind == "model":
        raise UnsupportedDistribution(
            "distribution.kind 'model' needs keras.distribution's "
            "ModelParallel, which Keras runs on the jax backend only. Use "
            "KERAS_BACKEND=jax, or distribution.kind 'data' here."
        )
    if os.environ.get("TF_CONFIG"):
        raise UnsupportedDistribution(
            "TF_CONFIG is set (a multi-worker tf.distribute cluster); this "
            "version trains on one host with TensorFlow. Run one process "
            "per host with KERAS_BACKEND=jax (keras.distribution multi-host) "
            "or torch (torchrun), or unset TF_CONFIG."
        )
    shape = section["mesh_shape"]
    if shape is not None and (len(shape) != 1 and shape[1:] != [1]):
        raise ValueError(
            f"'distribution.mesh_shape' {shape}: on tensorflow only data "
            f"parallelism runs, so give one axis, e.g. [2], or null."
        )
    wanted = section.get("num_devices")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if wanted is not None and wanted > len(devices):
            raise ValueError(
                f"'distribution.num_devices' is {wanted} but {len(devices)} "
                f"GPU(s) are visible; use at most {len(devices)} or null."
            )
        strategy = mirrored_strategy(devices=devices[:wanted])
        if shape is not None and shape[0] != strategy.num_replicas_in_sync:
            raise ValueError(
                f"'distribution.mesh_shape' {shape} does not match the "
                f"{strategy.num_replicas_in_sync} visible GPU(s); set it to "
                f"null (every GPU) or limit CUDA_VISIBLE_DEVICES."
            )
    else:
        strategy = mirrored_strategy(
            num_cpu_devices=(shape or [wanted or 1])[0]
        )
    replicas = strategy.num_replicas_in_sync
    where = "GPU" if gpus else "CPU"
    return StrategyRunDistribution(
        strategy,
        kind="data",
        num_replicas=replicas,
        num_devices=replicas,
        description=(
            f"tf.distribute.MirroredStrategy over {replicas} {where} "
            f"device(s), 1 process"
        ),
    )
