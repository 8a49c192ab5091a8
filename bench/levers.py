"""Seconds per epoch of one model under one setting of the speed levers, in plain Keras.

The benchmark (bench/run.py) starts this once per lever setting, alternating their order, to see
what each lever buys on this machine: the numbers it prints are the steady epochs (the first,
which traces the graph, is left out). Reads the model from params.yaml with plain YAML; the
learning rate follows the model's schedule over `--epochs`, so `--epochs` = the model's epochs
with `--test` is a full training, and its test accuracy.

    python bench/levers.py MODEL --data data/processed [--precision bfloat16] [--steps-per-execution 16]
        [--batch-size 512] [--lr 0.004] [--warmup 1] [--jit] [--threads INTRA,INTER]
        [--input tf.data] [--hidden 1024,1024] [--dropout 0.1] [--epochs 4] [--test]

`KERAS_BACKEND=jax` runs the same on JAX (when installed). Prints one JSON line.
"""

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import yaml

# The same plain reading of the preprocess stage's splits. Run as a script (`python bench/levers.py`,
# as bench/run.py does), bare_keras.py is a sibling on sys.path; mypy reads bench/ as the package it is.
if TYPE_CHECKING:
    from bench.bare_keras import load
else:
    from bare_keras import load


def main() -> None:
    cli = argparse.ArgumentParser()
    cli.add_argument("model")
    cli.add_argument("--data", type=Path, required=True)
    cli.add_argument("--root", type=Path, default=Path("."), help="where params.yaml is")
    cli.add_argument("--epochs", type=int, default=4)
    cli.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    cli.add_argument("--steps-per-execution", type=int, default=1, help="0: a whole epoch per call")
    cli.add_argument("--batch-size", type=int, help="default: the model's; the learning rate is scaled with it")
    cli.add_argument("--lr", type=float, help="the peak learning rate (default: the model's, scaled with the batch)")
    cli.add_argument("--warmup", type=float, help="epochs of linear warm-up (default: the model's warmup_epochs)")
    cli.add_argument("--jit", action="store_true", help="compile the train step with XLA (jit_compile=True)")
    cli.add_argument("--threads", help="INTRA,INTER: TensorFlow's thread pools (default: TensorFlow's choice)")
    cli.add_argument("--input", choices=["numpy", "tf.data"], default="numpy")
    cli.add_argument("--hidden", help="hidden units, comma-separated (default: the model's)")
    cli.add_argument("--dropout", type=float, help="default: the model's")
    cli.add_argument("--test", action="store_true", help="also report the test split's accuracy")
    args = cli.parse_args()
    p = yaml.safe_load((args.root / "params.yaml").read_text())["models"][args.model]
    batch = args.batch_size or p["batch_size"]
    hidden = [int(u) for u in args.hidden.split(",")] if args.hidden else p.get("hidden_units", [])
    dropout = p.get("dropout", 0) if args.dropout is None else args.dropout
    if keras.backend.backend() == "tensorflow" and args.threads:
        import tensorflow as tf

        intra, inter = map(int, args.threads.split(","))
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    dtype = "mixed_bfloat16" if args.precision == "bfloat16" else "float32"
    x_train, y_train = load(args.data, "train")
    x_val, y_val = load(args.data, "validation")
    keras.utils.set_random_seed(p["seed"])

    layers = [
        keras.Input((28, 28), dtype="uint8"),
        keras.layers.Rescaling(1 / 255, dtype=dtype),
        keras.layers.Flatten(dtype=dtype),
    ]
    for units in hidden:
        layers.append(keras.layers.Dense(units, p["activation"], dtype=dtype))
        if dropout:
            layers.append(keras.layers.Dropout(dropout, dtype=dtype))
    layers.append(keras.layers.Dense(10, "softmax", dtype="float32"))
    model = keras.Sequential(layers)
    steps = math.ceil(len(y_train) / batch)
    peak = args.lr or p["learning_rate"] * batch / p["batch_size"]
    lr: float | keras.optimizers.schedules.LearningRateSchedule = peak
    if p["lr_schedule"] == "cosine":
        warmup = round(min(p.get("warmup_epochs", 0) if args.warmup is None else args.warmup, args.epochs // 2) * steps)
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else peak,
            steps * args.epochs - warmup,
            warmup_target=peak if warmup else None,
            warmup_steps=warmup,
        )
    optimizer = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }[p["optimizer"]](lr)
    model.compile(
        optimizer,
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=args.steps_per_execution or steps,
        jit_compile=args.jit,
    )

    epochs = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            epochs.append((time.perf_counter() - self.wall, time.process_time() - self.cpu))

    if args.input == "tf.data":
        import tensorflow as tf

        train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(len(y_train), seed=p["seed"])
        fit_args: tuple[object, ...] = (train.batch(batch).prefetch(tf.data.AUTOTUNE),)
        fit_kwargs = {"validation_data": tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(batch)}
    else:
        fit_args, fit_kwargs = (x_train, y_train), {"validation_data": (x_val, y_val), "batch_size": batch}
    started = time.perf_counter()
    history = model.fit(*fit_args, epochs=args.epochs, callbacks=[Clock()], verbose=0, **fit_kwargs)
    fit_s = time.perf_counter() - started
    steady = epochs[1:]
    result = {
        "epoch_s": [wall for wall, _ in steady],
        "cores_busy": [cpu / wall for wall, cpu in steady],
        "fit_s": fit_s,
        "val_accuracy": history.history["val_accuracy"][-1],
        "backend": keras.backend.backend(),
        "cpu_count": os.cpu_count(),
    }
    if args.test:
        x_test, y_test = load(args.data, "test")
        result["test_accuracy"] = model.evaluate(x_test, y_test, batch_size=1024, verbose=0, return_dict=True)[
            "accuracy"
        ]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
