"""The one image-preparation path: raw pixels -> what a task takes.

`ImageNormalization` (in `image_normalization`, which needs no TensorFlow)
applies the OpenAI mean/std (inside a task on the device, or inside
`tf.data`); `SuperClassImageConverter` resizes, crops and optionally
normalises, using the transforms of `data.transforms`. The
readers, the tasks' preprocessors, `predict` and `probe` all go through
these two layers.
"""

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from keras_superclass.data import transforms
from keras_superclass.data.image_normalization import ImageNormalization
from keras_superclass.utils.constants import OPENAI_MEAN
from keras_superclass.utils.constants import OPENAI_STD


def to_backend(value):
    """A result computed eagerly (TF or backend) as a backend tensor;
    unchanged inside `tf.data`, where it must stay a TF tensor."""
    if tf.inside_function():
        return value
    return keras.ops.convert_to_tensor(np.asarray(value))


def as_rgb_pixels(images):
    """Images given as arrays, as RGB pixel values in [0, 255].

    Grayscale (`(H, W)` or one channel) is repeated to three channels and
    an alpha channel dropped, as decoding a file does (what
    `np.asarray(PIL.Image.open(path))` gives for a gray or RGBA PNG).
    Float images scaled to [0, 1] are refused: the converter would read
    them as nearly black.

    Example:
    >>> as_rgb_pixels(np.zeros((4, 5), "uint8")).shape
    (4, 5, 3)
    >>> as_rgb_pixels(np.zeros((2, 4, 5, 4), "uint8")).shape
    (2, 4, 5, 3)
    """
    if images.ndim == 2:
        images = images[..., None]
    channels = images.shape[-1] if images.ndim in (3, 4) else None
    if channels not in (1, 3, 4):
        raise ValueError(
            f"Expected images of shape (H, W, 3) or a batch (B, H, W, 3) "
            f"(grayscale and RGBA are converted), got shape {images.shape}."
        )
    if channels == 1:
        images = np.repeat(images, 3, axis=-1)
    elif channels == 4:
        images = images[..., :3]
    if images.dtype.kind == "f" and images.size:
        top = float(np.max(images))
        if 0.0 < top <= 1.0:
            raise ValueError(
                f"The images look scaled to [0, 1] (largest value {top:.3g})"
                f"; give pixel values in [0, 255] (uint8, or floats "
                f"multiplied by 255)."
            )
    return images


# keras-hub `ImageConverter` arguments this converter sets itself.
_DERIVED = (
    "scale",
    "offset",
    "crop_to_aspect_ratio",
    "pad_to_aspect_ratio",
    "interpolation",
    "antialias",
    "bounding_box_format",
)


@keras.saving.register_keras_serializable(package="keras_superclass")
class SuperClassImageConverter(keras_hub.layers.ImageConverter):
    """Resizes, crops and (optionally) normalises images for a task.

    Every path that prepares images (training and evaluation readers,
    `predict`, `probe`, the demo) goes through this layer, so a task's
    preset carries exactly how its images were prepared.

    - Evaluation (`call`, `crop(training=False)`): the shorter side is
      resized to `image_size` with a bicubic filter, then centre-cropped.
    - Training (`crop(training=True)`, used per record by the readers):
      torchvision's `RandomResizedCrop` (scale (0.9, 1), ratio (3/4, 4/3),
      bicubic), optionally the strong augmentation.
    - `resize_method`: `"pil"` (PIL's antialiased bicubic: the reference's
      pixels exactly), `"antialias"` (TensorFlow ops only) or `"fast"`
      (TensorFlow bicubic without antialiasing).
    - `normalize`: apply the OpenAI mean/std here (float32 output). With
      `False` (the default of the tasks, which normalise on the device)
      the output stays uint8 in [0, 255].

    Integer images are raw pixels, and so are float images, in [0, 255],
    unless they are this converter's own normalised output (inside
    `tf.data`, any float images of a normalising converter are taken as
    such). Images already at `image_size` are not resized, so
    applying the converter twice changes nothing: a dataset mapped with a
    task's preprocessor can be given to the task's `fit`, which maps it
    again.

    Args:
        image_size: output side length (int) or `(height, width)`.
        resize_method: one of `"pil"`, `"antialias"`, `"fast"`.
        normalize: normalise with `mean` / `std` here.
        mean: per-channel mean of [0, 1] pixels (OpenAI CLIP's).
        std: per-channel standard deviation (OpenAI CLIP's).

    Example:
    >>> converter = SuperClassImageConverter(image_size=32)
    >>> images = np.zeros((2, 48, 64, 3), "uint8")
    >>> tuple(keras.ops.shape(converter(images)))
    (2, 32, 32, 3)
    """

    def __init__(
        self,
        image_size=224,
        resize_method="pil",
        normalize=False,
        mean=OPENAI_MEAN,
        std=OPENAI_STD,
        **kwargs,
    ):
        if resize_method not in transforms.RESIZE_METHODS:
            raise ValueError(
                f"Unknown resize_method {resize_method!r}; use one of "
                f"{transforms.RESIZE_METHODS}."
            )
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        image_size = tuple(int(v) for v in image_size)
        if image_size[0] != image_size[1]:
            raise ValueError(
                f"Only square images are supported, got image_size "
                f"{image_size}."
            )
        for key in _DERIVED:
            kwargs.pop(key, None)
        super().__init__(
            image_size=image_size,
            interpolation="bicubic",
            antialias=resize_method != "fast",
            crop_to_aspect_ratio=True,
            **kwargs,
        )
        self.resize_method = resize_method
        self.normalize = bool(normalize)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.normalization = ImageNormalization(
            self.mean, self.std, name="normalization"
        )

    @property
    def size(self):
        """The output side length."""
        return self.image_size[0]

    def crop(
        self,
        image,
        training=False,
        seed=None,
        scale=transforms.TRAIN_SCALE,
        ratio=transforms.DEFAULT_RATIO,
        strong_augment=False,
    ):
        """One uint8 `(H, W, 3)` image -> uint8 `(size, size, 3)`, in TF.

        Args:
            image: decoded uint8 image of any size.
            training: random resized crop (needs `seed`), else the
                evaluation resize + centre crop.
            seed: stateless seed, int tensor `(2,)`.
            scale: crop area range of the random crop.
            ratio: crop aspect-ratio range of the random crop.
            strong_augment: colour jitter and grayscale after the crop.
        """
        if not training:
            return transforms.resize_center_crop(
                image, self.size, self.resize_method
            )
        seeds = transforms.split_seed(seed, 2)
        image = transforms.random_resized_crop(
            image, self.size, seeds[0], scale, ratio, self.resize_method
        )
        if strong_augment:
            image = transforms.strong_augment(image, seeds[1])
        return image

    def _prepare(self, images):
        """TF batch or single image of pixels -> prepared TF tensor."""
        if tuple(images.shape[-3:-1]) != self.image_size:
            pixels = images
            if pixels.dtype != tf.uint8:
                pixels = tf.clip_by_value(tf.round(pixels), 0, 255)
                pixels = tf.cast(pixels, tf.uint8)
            if pixels.shape.rank == 3:
                images = self.crop(pixels)
            else:
                images = tf.map_fn(
                    self.crop,
                    pixels,
                    fn_output_signature=tf.TensorSpec(
                        (self.size, self.size, 3), tf.uint8
                    ),
                )
        if self.normalize:
            images = self.normalization(images)
        return images

    def call(self, images):
        if isinstance(images, list | tuple):
            # Images of different sizes: prepare each, then stack.
            return keras.ops.stack([self(image) for image in images])
        if tf.inside_function():
            images = tf.convert_to_tensor(images)
        else:
            images = np.asarray(images)
        if self._is_prepared(images):
            return to_backend(images)
        if not tf.inside_function():
            images = as_rgb_pixels(images)
        return to_backend(self._prepare(tf.convert_to_tensor(images)))

    def _is_prepared(self, images):
        """Whether images are this converter's own output, so that a second
        application changes nothing.

        Eager arrays are checked for it (float, its size, three channels,
        values a normalisation can give), so float pixels are not mistaken
        for it; inside `tf.data` the values are unknown when the graph is
        built, so any float tensor of a normalising converter counts.
        """
        if not (self.normalize and keras.backend.is_float_dtype(images.dtype)):
            return False
        if tf.is_tensor(images):
            return True
        if images.shape[-3:] != (*self.image_size, 3) or not images.size:
            return False
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        low, high = np.min(-mean / std), np.max((1 - mean) / std)
        return low - 1e-3 <= images.min() and images.max() <= high + 1e-3

    def get_config(self):
        config = super().get_config()
        for key in _DERIVED:
            config.pop(key, None)
        config.update(
            image_size=self.size,
            resize_method=self.resize_method,
            normalize=self.normalize,
            mean=list(self.mean),
            std=list(self.std),
        )
        return config
