"""Data parallelism on the PyTorch backend with `torch.distributed`.

PyTorch-specific code (only imported under `KERAS_BACKEND=torch`). Keras
3.15 has no `keras.distribution` for torch, so this module keeps
`model.fit` and adds what `DistributedDataParallel` does, with the engine's
own collectives:

- `initialize()` joins the process group `torchrun` describes (`gloo` on
  CPU, `nccl` on GPU, one GPU per process).
- `data_parallel(model)` broadcasts rank 0's weights, then every train
  step averages the gradients over the processes (bucketed `all_reduce`
  before the optimizer applies them, so clipping, gradient accumulation
  and loss scaling see the global gradient) and logs the processes' mean
  metrics. (Wrapping in `DistributedDataParallel` would need the forward
  pass to run through the wrapper, which Keras' train step does not.)
- The online IDF statistics sum their label counts over the processes
  (`process_sum`, via `keras_superclass.distribution.replicas`).

Each process reads its own share of the shards (the reader splits files by
`torch.distributed` rank) at batch `global batch / world size`, and every
process must run the same number of steps (the trainer's endless stream
does). With gradient accumulation every micro-batch's gradient is averaged
(one exchange per micro-batch, as DDP without `no_sync`).

Launch one process per device:

    torchrun --nproc_per_node=2 train.py     # or `keras-superclass train`
"""

import os

import torch
import torch.distributed as dist

from keras_superclass.distribution.base import RunDistribution
from keras_superclass.distribution.base import UnsupportedDistribution

# DistributedDataParallel's default bucket size.
BUCKET_BYTES = 25 * 2**20


def initialize(backend=None):
    """Joins the process group from `torchrun`'s environment variables.

    Does nothing when the group exists already or when the process was not
    launched by `torchrun` (no `WORLD_SIZE`), which leaves a one-process
    run.

    Args:
        backend: `"gloo"` or `"nccl"`; default `nccl` when CUDA is
            available, else `gloo`.

    Returns:
        `(rank, world_size)`.
    """
    if not is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            # One GPU per process: Keras places tensors on the current one.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return rank(), world_size()


def is_initialized():
    return dist.is_available() and dist.is_initialized()


def rank():
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size():
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if is_initialized() else 1


def process_sum(x):
    """The sum of tensor `x` over the processes (`x` on one process)."""
    if world_size() == 1:
        return x
    total = x.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def _buckets(tensors, bucket_bytes):
    """Consecutive tensors of one dtype, up to `bucket_bytes` each."""
    bucket, size = [], 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and (
            size + nbytes > bucket_bytes or tensor.dtype != bucket[0].dtype
        ):
            yield bucket
            bucket, size = [], 0
        bucket.append(tensor)
        size += nbytes
    if bucket:
        yield bucket


def all_reduce_mean(tensors, bucket_bytes=None):
    """Averages tensors over the processes, in place; `None`s are skipped.

    Tensors travel flattened in buckets, all in flight at once (as
    `DistributedDataParallel` does), and are divided by the world size
    (`gloo` has no average).
    """
    world = world_size()
    bucket_bytes = bucket_bytes or BUCKET_BYTES
    tensors = [t for t in tensors if t is not None]
    if world == 1 or not tensors:
        return
    pending = []
    for bucket in _buckets(tensors, bucket_bytes):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        pending.append((bucket, flat, dist.all_reduce(flat, async_op=True)))
    for bucket, flat, work in pending:
        work.wait()
        flat.div_(world)
        offset = 0
        for tensor in bucket:
            n = tensor.numel()
            tensor.copy_(flat[offset : offset + n].view_as(tensor))
            offset += n


def broadcast_variables(variables, source=0):
    """Overwrites Keras variables with the values of rank `source`."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for variable in variables:
            dist.broadcast(variable.value.data, src=source)


def data_parallel(model):
    """Makes `model.fit` train data-parallel over the process group.

    Call after `compile` and before `fit`, in every process (each feeding
    its own share of every global batch). With one process the model is
    returned unchanged.

    Returns:
        The model.
    """
    if world_size() == 1:
        return model
    if model.optimizer is None:
        raise ValueError(
            "data_parallel() needs a compiled model: call model.compile() "
            "first, then data_parallel(model), then model.fit()."
        )
    if getattr(model, "_data_parallel_torch", False):
        return model
    # Same starting point everywhere, whatever each process's seed.
    broadcast_variables(model.variables)
    optimizer = model.optimizer
    apply = optimizer.apply

    def apply_mean_gradients(grads, trainable_variables=None):
        all_reduce_mean(list(grads))
        return apply(grads, trainable_variables)

    train_step = model.train_step

    def train_step_mean_logs(data):
        logs = dict(train_step(data))
        names = [k for k, v in logs.items() if torch.is_tensor(v)]
        # Copies: a metric's result may share its state's storage.
        means = [logs[k].detach().float().clone() for k in names]
        all_reduce_mean(means)
        logs.update(zip(names, means))
        return logs

    # Instance attributes, read by Keras' torch train step and fit loop.
    optimizer.apply = apply_mean_gradients
    model.train_step = train_step_mean_logs
    model.train_function = None
    model._data_parallel_torch = True
    return model


class TorchRunDistribution(RunDistribution):
    """A `RunDistribution` over the `torch.distributed` processes: each
    reads its own share of the shards and of every global batch."""

    def prepare_model(self, model):
        return data_parallel(model)


def activate(section):
    """The `RunDistribution` of a checked `distribution` section: data
    parallel over the processes `torchrun` started (one per device)."""
    kind = section["kind"]
    if kind == "model":
        raise UnsupportedDistribution(
            "distribution.kind 'model' needs keras.distribution's "
            "ModelParallel, which Keras runs on the jax backend only. Use "
            "KERAS_BACKEND=jax, or distribution.kind 'data' under torchrun."
        )
    rank_, world = initialize()
    shape = section["mesh_shape"]
    if shape is not None and list(shape) not in ([world], [world, 1]):
        raise ValueError(
            f"'distribution.mesh_shape' {shape} does not match the {world} "
            f"torch.distributed process(es) (one device each); set it to "
            f"null or [{world}], or start {shape[0]} processes with "
            f"`torchrun --nproc_per_node={shape[0]}`."
        )
    wanted = section.get("num_devices")
    if wanted is not None and wanted != world:
        raise ValueError(
            f"'distribution.num_devices' is {wanted} but {world} process(es) "
            f"run: on torch each process drives one device, so start "
            f"`torchrun --nproc_per_node={wanted} ...` (or set it to null)."
        )
    if world == 1 and torch.cuda.device_count() > 1 and kind == "data":
        raise ValueError(
            f"{torch.cuda.device_count()} GPUs but one process: on torch, "
            f"data parallelism runs one process per GPU. Launch with "
            f"`torchrun --nproc_per_node={torch.cuda.device_count()} ...`."
        )
    device = "GPU" if torch.cuda.is_available() else "CPU"
    return TorchRunDistribution(
        kind="data" if world > 1 else "none",
        num_replicas=world,
        num_devices=world,
        num_processes=world,
        process_index=rank_,
        data_shard_count=world,
        data_shard_index=rank_,
        description=(
            f"torch.distributed data parallel over {world} process(es) "
            f"({dist.get_backend() if world > 1 else 'no'} collectives, "
            f"one {device} each)"
        ),
    )
