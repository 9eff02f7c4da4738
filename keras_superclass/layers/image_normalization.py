"""Pixel normalisation as a layer, so it runs on the accelerator."""

import keras

from keras_superclass.utils.constants import OPENAI_MEAN
from keras_superclass.utils.constants import OPENAI_STD


@keras.saving.register_keras_serializable(package="keras_superclass")
class ImageNormalization(keras.layers.Layer):
    """`(pixels / 255 - mean) / std` of raw pixels in [0, 255].

    Lets the input pipeline ship uint8 images (a quarter of the bytes, no
    per-pixel host work) and normalise them on the device. Computes in
    float32 whatever the dtype policy (the next layer casts).

    Args:
        mean: per-channel mean of [0, 1] pixels.
        std: per-channel standard deviation of [0, 1] pixels.

    Example:
    >>> import numpy as np
    >>> layer = ImageNormalization()
    >>> pixels = np.full((1, 2, 2, 3), 255, "uint8")
    >>> out = keras.ops.convert_to_numpy(layer(pixels))
    >>> [round(float(v), 3) for v in out[0, 0, 0]]
    [1.93, 2.075, 2.146]
    """

    def __init__(self, mean=OPENAI_MEAN, std=OPENAI_STD, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if len(mean) != len(std):
            raise ValueError(
                f"`mean` and `std` need one value per channel; got "
                f"{len(mean)} and {len(std)}."
            )
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.built = True

    def call(self, images):
        images = keras.ops.cast(images, "float32")
        scale = [1.0 / (255.0 * s) for s in self.std]
        offset = [-m / s for m, s in zip(self.mean, self.std)]
        return images * keras.ops.convert_to_tensor(
            scale, "float32"
        ) + keras.ops.convert_to_tensor(offset, "float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, images):
        return keras.KerasTensor(images.shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std))
        return config
