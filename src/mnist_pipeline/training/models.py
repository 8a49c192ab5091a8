"""Keras model builders. Every model takes raw uint8 pixels: rescaling lives inside it,
so a saved or served model needs no preprocessing outside."""

import functools
from pathlib import Path

import keras
import tensorflow as tf

from mnist_pipeline.core.params import Augmentation, LogisticParams, MLPParams

N_CLASSES = 10
# Steps per call into the compiled graph: fewer returns to Python's loop (about 10 % of an epoch of
# the default MLP on 2 cores, bench/RESULTS.md). Per-batch callbacks then see every 16th batch.
STEPS_PER_EXECUTION = 16


@functools.cache
def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512_BF16 or AMX): there mixed precision
    halves the bytes a matmul moves at no cost in accuracy; elsewhere it is emulated, and slower."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):  # not Linux: no way to tell, so float32
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def compute_dtype(params: LogisticParams | MLPParams) -> str:
    """The Keras dtype policy the fit computes in: `precision`, with auto resolved for this machine:
    bfloat16 for an mlp on a CPU with native support and no GPU (whose own mixed precision differs).
    A logistic model's one 784×10 layer stays float32: there the casts cost more than the small
    matmul saves (its fit took 1.7× as long in bfloat16)."""
    if params.precision != "auto":
        return "mixed_bfloat16" if params.precision == "bfloat16" else "float32"
    bfloat16 = isinstance(params, MLPParams) and native_bfloat16() and not tf.config.list_physical_devices("GPU")
    return "mixed_bfloat16" if bfloat16 else "float32"


def architecture(params: LogisticParams | MLPParams, dtype: str = "float32") -> keras.Model:
    """The layers `params` describe, computing in `dtype` (a Keras dtype policy); not compiled."""
    regularizer = keras.regularizers.L2(params.l2) if params.l2 else None
    inputs = keras.Input(shape=(28, 28), dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(1 / 255, name="rescale", dtype=dtype)(inputs)
    x = keras.layers.Flatten(name="flatten", dtype=dtype)(x)
    if isinstance(params, MLPParams):
        for i, units in enumerate(params.hidden_units, start=1):
            x = keras.layers.Dense(
                units, params.activation, kernel_regularizer=regularizer, name=f"hidden_{i}", dtype=dtype
            )(x)
            if params.dropout:
                x = keras.layers.Dropout(params.dropout, name=f"dropout_{i}", dtype=dtype)(x)
    # Softmax output, so the loss takes probabilities (from_logits=False) and so does a served model.
    # In float32 under mixed precision too: the probabilities and the loss need its range.
    outputs = keras.layers.Dense(N_CLASSES, "softmax", kernel_regularizer=regularizer, name="digit", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=params.type)


def build(params: LogisticParams | MLPParams, steps_per_epoch: int, dtype: str | None = None) -> keras.Model:
    """The model compiled for training, computing in `dtype` (default: what `params` choose here)."""
    model = with_augmentation(architecture(params, dtype or compute_dtype(params)), params)
    model.compile(
        optimizer=optimizer(params, steps_per_epoch),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return model


def for_inference(model: keras.Model, params: LogisticParams | MLPParams) -> keras.Model:
    """The model to save, log and serve: the fitted weights (float32 under any precision) in a
    float32 model that is not compiled. Evaluation and serving then compute alike on any machine,
    and the file holds no optimizer state, which nothing after training reads (a third the size)."""
    inference = architecture(params, "float32")
    copy_weights(model, inference)
    return inference


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Each layer of `target` gets the weights of its namesake in `source`: by name, not by position,
    as the training model may hold layers the inference model lacks (augmentation, whose seed states
    are variables, though not weights)."""
    for layer in target.layers:
        layer.set_weights(source.get_layer(layer.name).get_weights())


# --- augmentation: in the training graph only --------------------------------------------------
def with_augmentation(model: keras.Model, params: LogisticParams | MLPParams) -> keras.Model:
    """`model` with `params.augmentation`'s random layers after the rescaling, or `model` itself when
    augmentation is off. The two share every other layer, so fitting one fits the other's weights.
    Keras calls the random layers with training=True in fit only; elsewhere they pass images through."""
    augment = augmentation(params.augmentation, params.seed)
    if augment is None:
        return model
    inputs = keras.Input(shape=(28, 28), dtype="uint8", name="pixels")
    x = inputs
    for layer in model.layers[1:]:  # after its InputLayer, the layers in order: rescale, flatten, ...
        x = layer(x)
        if layer.name == "rescale":
            x = augment(x)
    return keras.Model(inputs, x, name=model.name)


def augmentation(settings: Augmentation, seed: int) -> keras.Sequential | None:
    """The random layers `settings` ask for, on images scaled to [0, 1], or None when all are off.
    Seeded from the model's seed, each layer its own stream: the same params, the same fit. In
    float32 under any precision: images, not matmuls. Pixels moved in from outside are 0, paper."""
    if not settings.on:
        return None
    image = {"fill_mode": "constant", "fill_value": 0.0, "dtype": "float32"}
    layers: list[keras.layers.Layer] = [keras.layers.Reshape((28, 28, 1), name="to_image", dtype="float32")]
    # Strokes first, on the crisp pixel grid; then the geometry, about the centre before the shift.
    if settings.stroke:
        layers.append(StrokeWidth(settings.stroke, seed=seed + 1, name="stroke", dtype="float32"))
    if settings.zoom:
        layers.append(keras.layers.RandomZoom((-settings.zoom, settings.zoom), seed=seed + 2, name="zoom", **image))
    if settings.rotation:
        layers.append(keras.layers.RandomRotation(settings.rotation / 360, seed=seed + 3, name="rotation", **image))
    if settings.shift:
        shift = settings.shift
        layers.append(keras.layers.RandomTranslation(shift, shift, seed=seed + 4, name="shift", **image))
    layers.append(keras.layers.Reshape((28, 28), name="to_pixels", dtype="float32"))
    return keras.Sequential(layers, name="augment")


class StrokeWidth(keras.layers.Layer):
    """Thickens or thins each training image's strokes by 0 to `pixels` pixels, drawn per image: a
    grey-scale dilation (max-pool, stride 1) or erosion (min-pool) with a (k+1)×(k+1) window widens
    or narrows a stroke by k pixels. Pens differ more than MNIST's do. Identity at inference."""

    def __init__(self, pixels: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.pixels = pixels
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            return images
        variants = [images]
        for size in range(2, self.pixels + 2):
            variants.append(keras.ops.max_pool(images, size, strides=1, padding="same"))
            variants.append(-keras.ops.max_pool(-images, size, strides=1, padding="same"))
        choice = keras.random.randint((keras.ops.shape(images)[0],), 0, len(variants), seed=self.seed_generator)
        pick = keras.ops.one_hot(choice, len(variants), dtype=images.dtype)  # (batch, variants)
        return keras.ops.einsum("vbhwc,bv->bhwc", keras.ops.stack(variants), pick)

    def compute_output_shape(self, input_shape):
        return input_shape


def optimizer(params: LogisticParams | MLPParams, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    learning_rate = params.learning_rate
    if params.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, steps_per_epoch * params.epochs)
    choices = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    return choices[params.optimizer](learning_rate=learning_rate)
