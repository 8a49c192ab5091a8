"""Keras model builders. Every model takes raw uint8 pixels: rescaling lives inside it,
so a saved or served model needs no preprocessing outside."""

import keras

from mnist_pipeline.config import LogisticParams, MLPParams

N_CLASSES = 10


def build(params: LogisticParams | MLPParams, steps_per_epoch: int) -> keras.Model:
    regularizer = keras.regularizers.L2(params.l2) if params.l2 else None
    inputs = keras.Input(shape=(28, 28), dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    if isinstance(params, MLPParams):
        for i, units in enumerate(params.hidden_units, start=1):
            x = keras.layers.Dense(units, params.activation, kernel_regularizer=regularizer, name=f"hidden_{i}")(x)
            if params.dropout:
                x = keras.layers.Dropout(params.dropout, name=f"dropout_{i}")(x)
    # Softmax output, so the loss takes probabilities (from_logits=False) and so does a served model.
    outputs = keras.layers.Dense(N_CLASSES, "softmax", kernel_regularizer=regularizer, name="digit")(x)
    model = keras.Model(inputs, outputs, name=params.type)
    model.compile(
        optimizer=optimizer(params, steps_per_epoch),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


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
