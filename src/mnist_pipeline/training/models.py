"""Keras model builders. Every model takes raw uint8 pixels: rescaling lives inside it,
so a saved or served model needs no preprocessing outside."""

import functools
from pathlib import Path

import keras
import tensorflow as tf

from mnist_pipeline.core.params import LogisticParams, MLPParams
from mnist_pipeline.training.augmentation import with_augmentation

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


def architecture(params: LogisticParams | MLPParams, dtype: str = "float32", training: bool = False) -> keras.Model:
    """The layers `params` describe, computing in `dtype` (a Keras dtype policy); not compiled. A
    model to train (`training`) drops out with BytewiseDropout, one to save with Keras's own."""
    dropout = BytewiseDropout if training else keras.layers.Dropout
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
                x = dropout(params.dropout, name=f"dropout_{i}", dtype=dtype)(x)
    # Softmax output, so the loss takes probabilities (from_logits=False) and so does a served model.
    # In float32 under mixed precision too: the probabilities and the loss need its range.
    outputs = keras.layers.Dense(N_CLASSES, "softmax", kernel_regularizer=regularizer, name="digit", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=params.type)


def build(params: LogisticParams | MLPParams, steps_per_epoch: int, dtype: str | None = None) -> keras.Model:
    """The model compiled for training, computing in `dtype` (default: what `params` choose here)."""
    model = with_augmentation(architecture(params, dtype or compute_dtype(params), training=True), params)
    model.compile(
        optimizer=optimizer(params, steps_per_epoch),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return model


class BytewiseDropout(keras.layers.Dropout):
    """Keras's Dropout with its mask drawn from a quarter of the random numbers: each random 32-bit
    word gives four bytes, and a unit is dropped where its byte is below rate × 256 (so the rate is
    rounded to a 256th: 0.2 drops 51/256). TensorFlow's counter-based generator costs about 4 ns a
    number on a CPU: Keras's mask for a batch of 1024 × 512 took 2.8 ms, the matmul before it 1 ms;
    this one 1.6 ms, the fit's CPU per epoch 15–25 % less (bench/RESULTS.md). Training models only:
    at inference a dropout layer passes its input through, and the saved model has Keras's own."""

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        cut = round(self.rate * 256)
        rows, units = tf.shape(inputs)[0], inputs.shape[-1]
        words = -(-units // 4)
        seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), tf.int32)  # as Keras's own
        bits = tf.random.stateless_uniform((rows, words), seed, minval=None, maxval=None, dtype=tf.uint32)
        byte = tf.reshape(tf.bitcast(bits, tf.uint8), (rows, words * 4))[:, :units]
        return tf.where(byte >= cut, inputs * tf.cast(256 / (256 - cut), inputs.dtype), tf.zeros_like(inputs))


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


def optimizer(params: LogisticParams | MLPParams, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = params.learning_rate
    warmup = steps_per_epoch * min(params.warmup_epochs, params.epochs // 2)  # see params.warmup_epochs
    if params.lr_schedule == "cosine" or warmup:
        # Keras's cosine decay with its linear warm-up: from 0 to learning_rate over `warmup` steps, then
        # down to 0 by the last step (cosine) or level (constant: alpha 1 keeps the whole rate).
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else params.learning_rate,
            steps_per_epoch * params.epochs - warmup,
            alpha=1.0 if params.lr_schedule == "constant" else 0.0,
            warmup_target=params.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    choices = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    return choices[params.optimizer](learning_rate=learning_rate)
