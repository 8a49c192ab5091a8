"""What a user would write without the pipeline: the same model, data and epochs in plain Keras.

The benchmark runs this beside the pipeline's train stage, started the same way, to price what
the pipeline adds (MLflow, validation, atomic outputs). It reads params.yaml with plain YAML, not
the pipeline's code, and prints one JSON line: fit seconds, fit CPU seconds, epochs.

    python bench/bare_keras.py MODEL --data data/processed [--epochs N] [--root REPO]
"""

import argparse
import json
import os
import time
from pathlib import Path

import keras
import numpy as np
import yaml


def load(data: Path, split: str):
    with np.load(data / f"{split}.npz") as npz:
        return npz["x"], npz["y"]


def main() -> None:
    cli = argparse.ArgumentParser()
    cli.add_argument("model")
    cli.add_argument("--epochs", type=int, help="default: the model's epochs in params.yaml")
    cli.add_argument("--root", type=Path, default=Path("."), help="where params.yaml is and the model goes")
    cli.add_argument(
        "--data", type=Path, required=True, help="the folder of the preprocess stage's train/validation .npz"
    )
    args = cli.parse_args()
    p = yaml.safe_load((args.root / "params.yaml").read_text())["models"][args.model]
    epochs = args.epochs or p["epochs"]
    x_train, y_train = load(args.data, "train")
    x_val, y_val = load(args.data, "validation")
    keras.utils.set_random_seed(p["seed"])

    l2 = keras.regularizers.L2(p["l2"]) if p.get("l2") else None
    layers = [keras.Input((28, 28), dtype="uint8"), keras.layers.Rescaling(1 / 255), keras.layers.Flatten()]
    for units in p.get("hidden_units", []):
        layers.append(keras.layers.Dense(units, p["activation"], kernel_regularizer=l2))
        if p["dropout"]:
            layers.append(keras.layers.Dropout(p["dropout"]))
    layers.append(keras.layers.Dense(10, "softmax", kernel_regularizer=l2))
    model = keras.Sequential(layers)
    lr = p["learning_rate"]
    if p["lr_schedule"] == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, -(-len(y_train) // p["batch_size"]) * p["epochs"])
    optimizer = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }[p["optimizer"]](lr)
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])

    cpu, started = os.times(), time.perf_counter()
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, batch_size=p["batch_size"], verbose=2)
    fit_seconds, cpu_end = time.perf_counter() - started, os.times()
    model.save(args.root / f"bare-{args.model}.keras")
    fit_cpu = cpu_end.user - cpu.user + cpu_end.system - cpu.system
    print(json.dumps({"fit_seconds": fit_seconds, "fit_cpu_seconds": fit_cpu, "epochs": epochs}))


if __name__ == "__main__":
    main()
