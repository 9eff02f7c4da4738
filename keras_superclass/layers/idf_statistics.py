"""Running document-frequency statistics for the online IDF weighting."""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_superclass.distribution.replicas import num_replicas
from keras_superclass.distribution.replicas import sum_over_replicas


@keras.saving.register_keras_serializable(package="keras_superclass")
class IDFStatistics(keras.layers.Layer):
    """Running token document frequencies, as the reference `ClsLoss` keeps.

    Holds two non-trainable variables, saved with the model:
    `cap_fq` `(V,)`, the running sum over steps of the per-batch mean of the
    multi-hot labels, and `num_samples` `()`, the number of steps. Each
    training step first adds the batch to them, then reads the weights

        w_c = log((num_samples + 1/B) / (cap_fq_c + 1/B))

    with `B` the global batch. The batch mean is over the global batch, as
    the reference's all-reduce of the replicas' means: under a
    `keras.distribution` the batch axis is global already; under
    `tf.distribute` and `torch.distributed` the replicas sum their label
    counts and batch sizes (`keras_superclass.distribution.replicas`), so
    the statistics equal a single-device run's, however the batch is split.

    The reference keeps float64 buffers. JAX has no float64 by default, so
    `cap_fq` is float32 with Kahan-compensated summation (`cap_fq_error`
    holds the lost low-order part), which keeps float64-like accuracy over
    millions of steps on every backend.

    Args:
        vocabulary_size: number of classes.
    """

    def __init__(self, vocabulary_size, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)
        # Python flag, read when a step is traced: the task turns updates off
        # for evaluation steps.
        self.updates_enabled = True
        self.cap_fq = self.add_weight(
            shape=(self.vocabulary_size,),
            initializer="zeros",
            trainable=False,
            dtype="float32",
            # Equal on every replica after the reduction: keep one copy.
            aggregation="only_first_replica",
            name="cap_fq",
        )
        self.cap_fq_error = self.add_weight(
            shape=(self.vocabulary_size,),
            initializer="zeros",
            trainable=False,
            dtype="float32",
            aggregation="only_first_replica",
            name="cap_fq_error",
        )
        self.num_samples = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="float32",
            aggregation="only_first_replica",
            name="num_samples",
        )
        self.built = True

    @contextlib.contextmanager
    def updates(self, enabled):
        """Context in which `update_and_weights` does (not) update."""
        previous = self.updates_enabled
        self.updates_enabled = bool(enabled)
        try:
            yield
        finally:
            self.updates_enabled = previous

    def update(self, multi_hot):
        """Adds one batch of multi-hot labels `(B, V)` to the statistics.

        Returns:
            The global batch size (summed over data-parallel replicas).
        """
        multi_hot = ops.cast(multi_hot, "float32")
        # Label counts and batch size in one cross-replica sum.
        count = ops.cast(ops.shape(multi_hot)[:1], "float32")
        totals = sum_over_replicas(
            ops.concatenate([ops.sum(multi_hot, axis=0), count])
        )
        batch_size = totals[-1]
        batch_mean = totals[:-1] / batch_size
        # Kahan summation: carry the rounding error of every addition.
        y = batch_mean - self.cap_fq_error
        total = self.cap_fq + y
        self.cap_fq_error.assign((total - self.cap_fq) - y)
        self.cap_fq.assign(total)
        self.num_samples.assign(self.num_samples + 1.0)
        return batch_size

    def idf_weights(self, batch_size):
        """The IDF weight of every class, `(V,)` float32."""
        inv_batch = 1.0 / ops.cast(batch_size, "float32")
        cap_fq = self.cap_fq - self.cap_fq_error  # compensated sum
        return ops.log((self.num_samples + inv_batch) / (cap_fq + inv_batch))

    def update_and_weights(self, multi_hot):
        """Updates (when enabled) and returns the weights for this batch.

        Evaluation steps (no update) communicate nothing: their global
        batch is the local one times the number of replicas.
        """
        if self.updates_enabled:
            return self.idf_weights(self.update(multi_hot))
        return self.idf_weights(ops.shape(multi_hot)[0] * num_replicas())

    def set_statistics(self, cap_fq, num_samples):
        """Overwrites the statistics (e.g. from a reference checkpoint).

        A float64 `cap_fq` keeps its precision: the float32 rounding error
        goes into the Kahan term.
        """
        value = np.asarray(ops.convert_to_numpy(cap_fq), np.float64)
        value = value.reshape(-1)
        rounded = value.astype(np.float32)
        self.cap_fq.assign(rounded)
        error = rounded.astype(np.float64) - value
        self.cap_fq_error.assign(error.astype(np.float32))
        self.num_samples.assign(
            ops.cast(ops.reshape(num_samples, ()), "float32")
        )

    def call(self, inputs):
        return inputs

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary_size=self.vocabulary_size)
        return config
