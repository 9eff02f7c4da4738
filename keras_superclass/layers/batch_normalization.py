"""BatchNormalization whose training step under jax on a CPU sums by matmul.

Keras's BatchNorm reduces over batch and space for its statistics, and
autodiff adds two more such reductions in backward. Inside a whole CRU-Net
step XLA:CPU runs these as slow reduce-window loops: about 3 of the 4.5 s
of a CRU-Net-56 step (batch 8, 224 px). Here, under jax on a CPU, the
training forward and a hand-written backward take every column sum as one
matrix-vector product, and the step takes 2.4-2.6 s
(`benchmarks/crunet_throughput.py --kernels compare`). Everywhere else,
and for masks, renorm or a non-last axis, it is Keras's layer.
"""

import functools

import keras
from keras import ops

from keras_superclass.layers.xla_cpu_forms import column_sums
from keras_superclass.layers.xla_cpu_forms import jax_cpu_forms


@keras.saving.register_keras_serializable(package="keras_superclass")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, the same numbers; its training
    step is faster under jax on a CPU.

    Example:
    >>> layer = BatchNormalization()
    >>> x = np.arange(8, dtype="float32").reshape(2, 2, 2, 1)
    >>> y = layer(x, training=True)
    >>> round(float(keras.ops.mean(y)), 4), round(float(keras.ops.std(y)), 2)
    (0.0, 1.0)
    """

    def _sums_by_matmul(self, inputs, training, mask):
        return (
            training
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and self.axis in (-1, len(inputs.shape) - 1)
            and jax_cpu_forms()
        )

    def call(self, inputs, training=None, mask=None):
        if not self._sums_by_matmul(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        # As Keras: statistics and normalisation in (at least) float32.
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        channels = x.shape[-1]
        gamma = self.gamma if self.scale else ops.ones((channels,))
        beta = self.beta if self.center else ops.zeros((channels,))
        batch_norm = _jax_batch_norm_train(float(self.epsilon))
        outputs, mean, variance = batch_norm(
            x, ops.cast(gamma, x.dtype), ops.cast(beta, x.dtype)
        )
        momentum = self.momentum
        self.moving_mean.assign(
            ops.cast(self.moving_mean, x.dtype) * momentum
            + mean * (1.0 - momentum)
        )
        self.moving_variance.assign(
            ops.cast(self.moving_variance, x.dtype) * momentum
            + variance * (1.0 - momentum)
        )
        return ops.cast(outputs, self.compute_dtype)


# --- jax only: the training forward and backward ---------------------------


@functools.cache
def _jax_batch_norm_train(epsilon):
    """`(x, gamma, beta) -> (outputs, mean, variance)`, a training step over
    all axes but the last; the variance is the mean squared deviation (two
    passes), as Keras's `ops.moments`."""
    import jax

    @jax.custom_vjp
    def batch_norm(x, gamma, beta):
        return forward(x, gamma, beta)[0]

    def forward(x, gamma, beta):
        count = x.size // x.shape[-1]
        (mean,) = column_sums(x)
        mean = mean / count
        (variance,) = column_sums((x - mean) ** 2)
        variance = variance / count
        inverse = jax.lax.rsqrt(variance + epsilon)
        outputs = (x - mean) * (inverse * gamma) + beta
        return (outputs, mean, variance), (x, mean, inverse, gamma)

    def backward(saved, cotangents):
        x, mean, inverse, gamma = saved
        d_outputs, d_mean, d_variance = cotangents
        count = x.size // x.shape[-1]
        centred = x - mean
        normalised = centred * inverse
        d_beta, d_gamma = column_sums(d_outputs, d_outputs * normalised)
        d_x = (gamma * inverse) * (
            d_outputs - d_beta / count - normalised * (d_gamma / count)
        )
        # The statistics are outputs too (the moving averages read them).
        d_x = d_x + d_mean / count + d_variance * 2.0 * centred / count
        return d_x, d_gamma, d_beta

    batch_norm.defvjp(forward, backward)
    return batch_norm
