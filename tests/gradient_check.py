"""Values and gradients of a function on the current Keras backend."""

import keras
import numpy as np
from keras import ops

BACKEND = keras.backend.backend()


def value_and_grads(function, inputs):
    """`function(*inputs)` and the gradients of a weighted sum of it."""

    def weights_like(out):
        rng = np.random.default_rng(1)
        return rng.normal(size=tuple(out.shape)).astype("float32")

    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(x) for x in inputs]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            out = function(*tensors)
            loss = tf.reduce_sum(tf.cast(out, "float32") * weights_like(out))
        grads = tape.gradient(loss, tensors)
    elif BACKEND == "jax":
        import jax

        def loss_of(*xs):
            out = function(*xs)
            loss = ops.cast(out, "float32") * weights_like(out)
            return ops.sum(loss), out

        (_, out), grads = jax.value_and_grad(
            loss_of, argnums=tuple(range(len(inputs))), has_aux=True
        )(*inputs)
    else:
        import torch

        tensors = [torch.tensor(x, requires_grad=True) for x in inputs]
        out = function(*tensors)
        (out.float() * torch.from_numpy(weights_like(out))).sum().backward()
        grads = [t.grad for t in tensors]
    return as_numpy(out), [as_numpy(g) for g in grads]


def as_numpy(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")))
