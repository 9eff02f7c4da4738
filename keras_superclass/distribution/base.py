"""`RunDistribution`: what the trainer needs to know about a distribution.

Every backend's implementation returns one of these from its `activate`
(JAX: `jax_distribution.activate`; TensorFlow: `tensorflow_strategy.
activate`; PyTorch: `torch_ddp.activate`). The trainer enters it around
model building, compile and fit, reads each process's share of the data
with `process_batch_size` / `data_shard_index` / `data_shard_count`, and
writes files only on the chief process.
"""

import contextlib


class UnsupportedDistribution(NotImplementedError, ValueError):
    """A distribution setting this backend (or version) cannot run.

    A `ValueError` too: a choice in the user's config, which the command
    line reports in one line.
    """


class RunDistribution:
    """How one training run is spread over devices and processes.

    Also a context manager: `with run_distribution:` makes it current
    (`scope()`), e.g. around building, compiling and fitting the model.

    Args:
        kind: `"none"`, `"data"` or `"model"`.
        num_replicas: ways the global batch is split across devices (the
            size of the batch axis of the mesh).
        num_devices: devices in the run, all processes together.
        num_processes: processes in the run.
        process_index: this process's index.
        data_shard_count: processes reading different data (processes of
            one model replica read the same data).
        data_shard_index: which of those this process reads.
        description: one line for logs.
    """

    def __init__(
        self,
        kind="none",
        num_replicas=1,
        num_devices=1,
        num_processes=1,
        process_index=0,
        data_shard_count=1,
        data_shard_index=0,
        description="one device",
    ):
        self.kind = kind
        self.num_replicas = int(num_replicas)
        self.num_devices = int(num_devices)
        self.num_processes = int(num_processes)
        self.process_index = int(process_index)
        self.data_shard_count = int(data_shard_count)
        self.data_shard_index = int(data_shard_index)
        self.description = description
        self._scopes = []

    @property
    def is_chief(self):
        """True on the process that writes checkpoints, logs and presets."""
        return self.process_index == 0

    def scope(self):
        """A context in which models are built and trained distributed."""
        return contextlib.nullcontext()

    def prepare_model(self, model):
        """Readies a compiled model for `fit` under this distribution (e.g.
        gradient averaging across `torch.distributed` processes); call
        after `compile` (and after restoring a checkpoint).

        Returns:
            The model to train.
        """
        return model

    def __enter__(self):
        scope = self.scope()
        scope.__enter__()
        self._scopes.append(scope)
        return self

    def __exit__(self, *exc_info):
        return self._scopes.pop().__exit__(*exc_info)

    def process_batch_size(
        self, global_batch_size, key="training.micro_batch_size"
    ):
        """This process's share of a global batch.

        Raises:
            ValueError: the batch does not split evenly over the replicas.
        """
        if global_batch_size % self.num_replicas:
            raise ValueError(
                f"The global batch of {global_batch_size} ('{key}') does "
                f"not split evenly over the {self.num_replicas} data-"
                f"parallel replicas of this run ({self.description}). Use a "
                f"multiple of {self.num_replicas}, or another number of "
                f"replicas ('distribution.mesh_shape'; under torchrun, "
                f"--nproc_per_node)."
            )
        return global_batch_size // self.data_shard_count

    def __repr__(self):
        return f"<RunDistribution {self.kind}: {self.description}>"
