"""`ImageNormalization`: the OpenAI mean/std as a Keras layer.

Kept apart from `image_converter` because a task applies it on the device:
this module needs no TensorFlow, so the model path imports without it.
"""

import keras

from keras_superclass.utils.constants import OPENAI_MEAN
from keras_superclass.utils.constants import OPENAI_STD


@keras.saving.register_keras_serializable(package="keras_superclass")
class ImageNormalization(keras.layers.Rescaling):
    """`(pixels / 255 - mean) / std` of raw pixels in [0, 255].

    A `keras.layers.Rescaling` with per-channel scale and offset, so the
    same layer normalises on the device inside a task (the input pipeline
    ships uint8: a quarter of the bytes, no per-pixel host work) and inside
    `tf.data` on every backend. Computes in float32 whatever the dtype
    policy (the next layer casts).

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
        if len(mean) != len(std):
            raise ValueError(
                f"`mean` and `std` need one value per channel; got "
                f"{len(mean)} and {len(std)}."
            )
        kwargs.setdefault("dtype", "float32")
        for key in ("scale", "offset"):  # derived from mean and std
            kwargs.pop(key, None)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        super().__init__(
            scale=[1.0 / (255.0 * s) for s in self.std],
            offset=[-m / s for m, s in zip(self.mean, self.std)],
            **kwargs,
        )
        self.built = True

    def compute_output_spec(self, images):
        return keras.KerasTensor(images.shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        del config["scale"], config["offset"]
        config.update(mean=list(self.mean), std=list(self.std))
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
