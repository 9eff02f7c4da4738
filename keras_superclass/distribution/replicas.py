"""Cross-replica sums for the statistics the library computes itself.

Gradients and the loss are reduced by each backend's engine (Keras under
`tf.distribute`, `torch_ddp` under `torch.distributed`, XLA under
`keras.distribution`). The online IDF statistics are batch statistics the
library computes inside the loss, so it reduces them itself, here:

- jax (`keras.distribution`): the batch axis is global already: identity.
- tensorflow (`tf.distribute`): `ReplicaContext.all_reduce`.
- torch (`torch.distributed`, e.g. under `torchrun`): `all_reduce` over
  the processes of the default group.

Every replica must call these in lock step (as training steps do).
"""

import keras


def sum_over_replicas(x):
    """The sum of `x` over the data-parallel replicas (`x` on one)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from keras_superclass.distribution import tensorflow_strategy

        return tensorflow_strategy.replica_sum(x)
    if backend == "torch":
        from keras_superclass.distribution import torch_ddp

        return torch_ddp.process_sum(x)
    return x


def num_replicas():
    """How many data-parallel replicas split each batch (1 under jax,
    whose `keras.distribution` batches are global)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from keras_superclass.distribution import tensorflow_strategy

        return tensorflow_strategy.num_replicas()
    if backend == "torch":
        from keras_superclass.distribution import torch_ddp

        return torch_ddp.world_size()
    return 1
