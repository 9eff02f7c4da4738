"""Running document-frequency statistics for the online IDF weighting."""

import contextlib

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_superclass")
class IDFStatistics(keras.layers.Layer):
    """Running token document frequencies, as the reference `ClsLoss` keeps.

    Holds two non-trainable variables, saved with the model:
    `cap_fq` `(V,)`, the running sum over steps of the per-batch mean of the
    multi-hot labels, and `num_samples` `()`, the number of steps. Each
    training step first adds the batch to them, then reads the weights

        w_c = log((num_samples + 1/B) / (cap_fq_c + 1/B))

    with `B` the global batch. Under a `keras.distribution` the batch axis is
    global, so the batch mean is already the all-reduced mean of the
    replicas' means, as in the reference.

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
            name="cap_fq",
        )
        self.cap_fq_error = self.add_weight(
            shape=(self.vocabulary_size,),
            initializer="zeros",
            trainable=False,
            dtype="float32",
            name="cap_fq_error",
        )
        self.num_samples = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="float32",
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
        """Adds one batch of multi-hot labels `(B, V)` to the statistics."""
        batch_mean = ops.mean(ops.cast(multi_hot, "float32"), axis=0)
        # Kahan summation: carry the rounding error of every addition.
        y = batch_mean - self.cap_fq_error
        total = self.cap_fq + y
        self.cap_fq_error.assign((total - self.cap_fq) - y)
        self.cap_fq.assign(total)
        self.num_samples.assign(self.num_samples + 1.0)

    def idf_weights(self, batch_size):
        """The IDF weight of every class, `(V,)` float32."""
        inv_batch = 1.0 / ops.cast(batch_size, "float32")
        cap_fq = self.cap_fq - self.cap_fq_error  # compensated sum
        return ops.log((self.num_samples + inv_batch) / (cap_fq + inv_batch))

    def update_and_weights(self, multi_hot):
        """Updates (when enabled) and returns the weights for this batch."""
        if self.updates_enabled:
            self.update(multi_hot)
        return self.idf_weights(ops.shape(multi_hot)[0])

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
