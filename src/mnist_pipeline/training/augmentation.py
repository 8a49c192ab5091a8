"""Augmentation (models.<name>.augmentation): random layers in the model Keras trains, so that the
fit sees digits shifted, turned, scaled and written with other pens than MNIST's; never in the model
that is saved, logged and served (models.for_inference leaves them out).

Two layers of our own on keras.ops, each drawing from a seed of the model's: one affine transform
for shift, rotation and zoom together (Keras' RandomTranslation, RandomRotation and RandomZoom
would each resample the batch: three times the cost, measured in bench/AUGMENTATION.md), and a
stroke-width layer. Like Keras' Random* layers they act only when called with training=True, which
Keras does in fit and nowhere else.

Their pixel work is compiled by XLA (`tf.function(jit_compile=True)`): TensorFlow's own affine kernel
took 10–11 ms per batch of 1024 on 2 cores, and the stroke layer's dozen small ops 6 ms, together
near half of an epoch; fused by XLA, 4.6 and 1 ms (the same pixels, to float32's last bit). The rest
of the model stays outside XLA, which made the whole fit slower (bench/RESULTS.md)."""

import math

import keras
import tensorflow as tf
from keras import ops

from mnist_pipeline.core.params import Augmentation, LogisticParams, MLPParams

SIDE = 28


def with_augmentation(model: keras.Model, params: LogisticParams | MLPParams) -> keras.Model:
    """`model` with `params.augmentation`'s random layers after the rescaling, or `model` itself when
    augmentation is off. The two share every other layer, so fitting one fits the other's weights."""
    augment = augmentation(params.augmentation, params.seed)
    if augment is None:
        return model
    inputs = keras.Input(shape=(SIDE, SIDE), dtype="uint8", name="pixels")
    x = inputs
    for layer in model.layers[1:]:  # after its InputLayer, the layers in order: rescale, flatten, ...
        x = layer(x)
        if layer.name == "rescale":
            x = augment(x)
    return keras.Model(inputs, x, name=model.name)


def augmentation(settings: Augmentation, seed: int) -> keras.Sequential | None:
    """The random layers `settings` ask for, on images scaled to [0, 1], or None when all are off.
    Seeded from the model's seed, each layer its own stream: the same params, the same fit. In
    float32 under any precision: images, not matmuls."""
    if not settings.on:
        return None
    layers: list[keras.layers.Layer] = [keras.layers.Reshape((SIDE, SIDE, 1), name="to_image", dtype="float32")]
    if settings.stroke:  # first, on the crisp pixel grid, before resampling blurs it
        layers.append(StrokeWidth(settings.stroke, seed=seed + 1, name="stroke", dtype="float32"))
    if settings.shift or settings.rotation or settings.zoom:
        geometry = (settings.shift, settings.rotation, settings.zoom)
        layers.append(RandomAffine(*geometry, seed=seed + 2, name="affine", dtype="float32"))
    layers.append(keras.layers.Reshape((SIDE, SIDE), name="to_pixels", dtype="float32"))
    return keras.Sequential(layers, name="augment")


class RandomAffine(keras.layers.Layer):
    """Each image turned by up to `rotation` degrees and scaled by up to `zoom` (larger or smaller)
    about its centre, and moved by up to `shift` of the side on each axis, either way: one bilinear
    resampling per image. Pixels moved in from outside are 0, empty paper."""

    def __init__(self, shift: float, rotation: float, zoom: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.shift, self.rotation, self.zoom = shift, rotation, zoom
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            return images
        n = ops.shape(images)[0]

        def uniform(limit: float):
            return keras.random.uniform((n,), -limit, limit, seed=self.seed_generator)

        angle, scale = uniform(math.radians(self.rotation)), 1 + uniform(self.zoom)
        dx, dy = uniform(self.shift * SIDE), uniform(self.shift * SIDE)
        # The transform maps each output pixel to where it is read in the input: the inverse of
        # out = c + scale * R(angle) (in - c) + (dx, dy), about the centre c.
        c = (SIDE - 1) / 2
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        a2 = c - cos * (c + dx) - sin * (c + dy)
        b2 = c + sin * (c + dx) - cos * (c + dy)
        transform = ops.stack([cos, sin, a2, -sin, cos, b2], axis=1)
        return resample(images, transform)

    def compute_output_shape(self, input_shape):
        return input_shape


class StrokeWidth(keras.layers.Layer):
    """Thickens or thins each image's strokes by 0 to `pixels` pixels, drawn per image: a grey-scale
    dilation (the maximum over a (k+1)×(k+1) window, stride 1) or erosion (the minimum) widens or
    narrows a stroke by k pixels. Pens differ more than MNIST's do."""

    def __init__(self, pixels: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.pixels = pixels
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            return images
        # k in -pixels..pixels, uniformly: thinner, unchanged or thicker.
        n, most = ops.shape(images)[0], self.pixels
        k = keras.random.randint((n, 1, 1, 1), -most, most + 1, seed=self.seed_generator)
        return restroke(images, k, most)

    def compute_output_shape(self, input_shape):
        return input_shape


def window(images, k: int, reduce):
    """`reduce` (maximum or minimum) over a (k+1)×(k+1) window around each pixel, from shifted copies:
    a few element-wise ops, cheaper on a CPU than a pooling op over one channel. Outside is 0."""
    before, after = k // 2, k - k // 2
    padded = ops.pad(images, [[0, 0], [before, after], [before, after], [0, 0]])
    rows = padded[:, :, :SIDE]
    for j in range(1, k + 1):
        rows = reduce(rows, padded[:, :, j : j + SIDE])
    out = rows[:, :SIDE]
    for j in range(1, k + 1):
        out = reduce(out, rows[:, j : j + SIDE])
    return out


@tf.function(jit_compile=True)
def resample(images, transform):
    """Each image (n, 28, 28, 1) read through its affine `transform` (n, 6: a0 a1 a2 b0 b1 b2, output
    pixel (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2)), bilinear, 0 outside: what
    TensorFlow's ImageProjectiveTransformV3 computes, as gathers XLA compiles into one loop."""
    n, pad = tf.shape(images)[0], 2  # two pixels of 0 around: a point clipped into them reads only 0
    wide = SIDE + 2 * pad
    flat = tf.reshape(tf.pad(images[..., 0], [[0, 0], [pad, pad], [pad, pad]]), (n, wide * wide))
    rows, cols = tf.meshgrid(tf.range(SIDE, dtype=tf.float32), tf.range(SIDE, dtype=tf.float32), indexing="ij")
    t = [transform[:, i, None, None] for i in range(6)]
    x, y = t[0] * cols + t[1] * rows + t[2], t[3] * cols + t[4] * rows + t[5]
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = x - x0, y - y0
    left = tf.cast(tf.clip_by_value(x0 + pad, 0, wide - 2), tf.int32)
    top = tf.cast(tf.clip_by_value(y0 + pad, 0, wide - 2), tf.int32)
    corner = tf.reshape(top * wide + left, (n, SIDE * SIDE))

    def read(offset: int):
        return tf.reshape(tf.gather(flat, corner + offset, batch_dims=1), (n, SIDE, SIDE))

    upper = (1 - fx) * read(0) + fx * read(1)
    lower = (1 - fx) * read(wide) + fx * read(wide + 1)
    return ((1 - fy) * upper + fy * lower)[..., None]


@tf.function(jit_compile=True)
def restroke(images, k, most: int):
    """Each image's strokes widened by k pixels (k > 0) or narrowed by -k (k < 0), |k| <= most."""
    out = images
    for width in range(1, most + 1):
        out = tf.where(k == width, window(images, width, ops.maximum), out)
        out = tf.where(k == -width, window(images, width, ops.minimum), out)
    return out
