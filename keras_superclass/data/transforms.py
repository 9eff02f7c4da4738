"""Image transforms of the reference recipe, as TensorFlow graph ops.

All functions take one image `(H, W, 3)` and, where random, a stateless
seed (int tensor of shape `(2,)`), so a fixed seed gives the same output on
every backend and every run.

- `random_resized_crop`: torchvision's `RandomResizedCrop` (10 attempts,
  log-uniform aspect ratio, centre-crop fallback) followed by a bicubic
  resize. The reference uses scale (0.9, 1.0), ratio (3/4, 4/3), no flip.
- `resize_center_crop`: the evaluation transform: resize the shorter side
  to `size` (bicubic), centre crop `size x size`.
- `resize_bicubic`: the resize both use, by one of `RESIZE_METHODS`:
  `"pil"` (default) is PIL's antialiased bicubic, what torchvision applies
  to the reference's PIL images, bit for bit; `"antialias"` is pure graph
  ops (`tf.image.resize(antialias=True)`, within one grey level of PIL, for
  pipelines that must not call Python); `"fast"` is TensorFlow's bicubic
  without antialiasing (the fastest; it aliases when shrinking by much
  more than the reference's crops do).
- `color_jitter` / `random_grayscale`: the strong augmentation
  (ColorJitter(0.32, 0.32, 0.32, 0.08) with p=0.8, grayscale with p=0.2).
"""

import math

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_superclass.data import python_ops

TRAIN_SCALE = (0.9, 1.0)
STRONG_SCALE = (0.4, 1.0)
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def split_seed(seed, num):
    """`num` independent stateless seeds `(num, 2)` derived from `seed`."""
    return tf.random.experimental.stateless_split(seed, num=num)


def random_crop_box(
    height, width, seed, scale=TRAIN_SCALE, ratio=DEFAULT_RATIO, attempts=10
):
    """The `(top, left, crop_height, crop_width)` of torchvision's
    `RandomResizedCrop.get_params`, computed with stateless ops."""
    seeds = split_seed(seed, 4)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    area = h * w
    target_area = area * tf.random.stateless_uniform(
        [attempts], seeds[0], scale[0], scale[1]
    )
    log_ratio = tf.random.stateless_uniform(
        [attempts], seeds[1], math.log(ratio[0]), math.log(ratio[1])
    )
    aspect = tf.exp(log_ratio)
    crop_w = tf.round(tf.sqrt(target_area * aspect))
    crop_h = tf.round(tf.sqrt(target_area / aspect))
    valid = (crop_w > 0) & (crop_w <= w) & (crop_h > 0) & (crop_h <= h)
    first = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)
    found = tf.reduce_any(valid)

    # Fallback: centre crop at the aspect ratio clamped into `ratio`.
    in_ratio = w / h
    fb_w = tf.where(
        in_ratio < ratio[0],
        w,
        tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w),
    )
    fb_h = tf.where(
        in_ratio < ratio[0],
        tf.round(w / ratio[0]),
        tf.where(in_ratio > ratio[1], h, h),
    )
    ch = tf.where(found, crop_h[first], fb_h)
    cw = tf.where(found, crop_w[first], fb_w)
    u = tf.random.stateless_uniform([2], seeds[2])
    # torch.randint(0, n + 1) for the offsets, `(n - c) // 2` as fallback.
    top = tf.where(found, tf.floor(u[0] * (h - ch + 1)), tf.floor((h - ch) / 2))
    left = tf.where(
        found, tf.floor(u[1] * (w - cw + 1)), tf.floor((w - cw) / 2)
    )
    top = tf.minimum(top, h - ch)
    left = tf.minimum(left, w - cw)
    return (
        tf.cast(top, tf.int32),
        tf.cast(left, tf.int32),
        tf.cast(ch, tf.int32),
        tf.cast(cw, tf.int32),
    )


RESIZE_METHODS = ("pil", "antialias", "fast")


def _pil_bicubic(pixels, size_hw):
    height, width = (int(v) for v in size_hw)
    image = Image.fromarray(pixels)
    return np.asarray(image.resize((width, height), Image.BICUBIC))


def resize_bicubic(image, size_hw, method="pil"):
    """Bicubic resize of a uint8 `(H, W, 3)` image to `size_hw`, as uint8.

    Args:
        image: uint8 `(H, W, 3)`.
        size_hw: `(height, width)` (ints or an int tensor).
        method: `"pil"` (PIL's antialiased bicubic, as torchvision on PIL
            images: the reference, exactly), `"antialias"` (pure graph ops,
            within one grey level of PIL) or `"fast"` (TensorFlow bicubic
            without antialiasing).
    """
    if method == "pil":
        # PIL releases the GIL while resampling, so parallel tf.data calls
        # run on all cores.
        out = python_ops.numpy_function(
            _pil_bicubic,
            [tf.cast(image, tf.uint8), tf.cast(size_hw, tf.int32)],
            tf.uint8,
            stateful=False,
        )
    elif method in ("antialias", "fast"):
        out = tf.image.resize(
            image, size_hw, method="bicubic", antialias=method == "antialias"
        )
        out = tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)
    else:
        raise ValueError(
            f"Unknown resize method {method!r}; use one of {RESIZE_METHODS}."
        )
    return tf.ensure_shape(out, [None, None, 3])


def random_resized_crop(
    image,
    size,
    seed,
    scale=TRAIN_SCALE,
    ratio=DEFAULT_RATIO,
    method="pil",
):
    """Random crop (area `scale`, aspect `ratio`) resized to `size x size`.

    Returns uint8 `(size, size, 3)`; `method` as in `resize_bicubic`.
    """
    shape = tf.shape(image)
    top, left, ch, cw = random_crop_box(shape[0], shape[1], seed, scale, ratio)
    crop = image[top : top + ch, left : left + cw]
    resized = resize_bicubic(crop, (size, size), method)
    return tf.ensure_shape(resized, (size, size, 3))


def resize_center_crop(image, size, method="pil"):
    """Resizes the shorter side to `size` (bicubic) and centre-crops it.

    Returns uint8 `(size, size, 3)`; `method` as in `resize_bicubic`.
    """
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    short = tf.minimum(h, w)
    # torchvision: the long side becomes int(size * long / short).
    new_h = tf.where(h <= w, float(size), tf.floor(size * h / short))
    new_w = tf.where(w <= h, float(size), tf.floor(size * w / short))
    new_h = tf.cast(new_h, tf.int32)
    new_w = tf.cast(new_w, tf.int32)
    resized = resize_bicubic(image, tf.stack([new_h, new_w]), method)
    top = tf.cast(tf.round(tf.cast(new_h - size, tf.float32) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - size, tf.float32) / 2), tf.int32)
    crop = resized[top : top + size, left : left + size]
    return tf.ensure_shape(crop, (size, size, 3))


def _grayscale(image):
    weights = tf.constant([0.299, 0.587, 0.114], image.dtype)
    return tf.reduce_sum(image * weights, axis=-1, keepdims=True)


def color_jitter(
    image,
    seed,
    brightness=0.32,
    contrast=0.32,
    saturation=0.32,
    hue=0.08,
):
    """torchvision `ColorJitter` on a float image in [0, 1].

    The four adjustments run in a random order with factors drawn uniformly
    from `[1 - x, 1 + x]` (hue: a shift in `[-hue, hue]` of the circle).
    """
    seeds = split_seed(seed, 2)
    u = tf.random.stateless_uniform([4], seeds[0])
    b = 1.0 + brightness * (2.0 * u[0] - 1.0)
    c = 1.0 + contrast * (2.0 * u[1] - 1.0)
    s = 1.0 + saturation * (2.0 * u[2] - 1.0)
    h = hue * (2.0 * u[3] - 1.0)
    order = tf.argsort(tf.random.stateless_uniform([4], seeds[1]))

    def adjust_brightness(x):
        return tf.clip_by_value(x * b, 0.0, 1.0)

    def adjust_contrast(x):
        mean = tf.reduce_mean(_grayscale(x))
        return tf.clip_by_value((x - mean) * c + mean, 0.0, 1.0)

    def adjust_saturation(x):
        gray = _grayscale(x)
        return tf.clip_by_value((x - gray) * s + gray, 0.0, 1.0)

    def adjust_hue(x):
        return tf.clip_by_value(tf.image.adjust_hue(x, h), 0.0, 1.0)

    branches = [adjust_brightness, adjust_contrast, adjust_saturation]
    branches.append(adjust_hue)
    for k in range(4):
        image = tf.switch_case(
            order[k], [lambda f=f, x=image: f(x) for f in branches]
        )
        image = tf.ensure_shape(image, [None, None, 3])
    return image


def random_grayscale(image, seed, probability=0.2):
    """Turns the image grey (3 equal channels) with `probability`."""
    u = tf.random.stateless_uniform([], seed)
    gray = tf.tile(_grayscale(image), [1, 1, 3])
    return tf.where(u < probability, gray, image)


def strong_augment(image, seed, jitter_probability=0.8, gray_probability=0.2):
    """ColorJitter(0.32, 0.32, 0.32, 0.08) with p=0.8, then grayscale with
    p=0.2, on an image in [0, 255]. Returns uint8."""
    seeds = split_seed(seed, 3)
    x = tf.cast(image, tf.float32) / 255.0
    apply = tf.random.stateless_uniform([], seeds[0]) < jitter_probability
    x = tf.cond(apply, lambda: color_jitter(x, seeds[1]), lambda: x)
    x = random_grayscale(x, seeds[2], gray_probability)
    return tf.cast(tf.round(tf.clip_by_value(x * 255.0, 0.0, 255.0)), tf.uint8)


def decode_rgb(encoded):
    """Decodes JPEG / PNG / GIF / BMP / WebP bytes to uint8 RGB `(H, W, 3)`.

    Grayscale is replicated, alpha dropped, CMYK JPEG converted; animated
    GIFs give their first frame.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])
