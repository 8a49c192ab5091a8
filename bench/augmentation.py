"""What augmentation costs and buys: a model of params.yaml trained with augmentation off and with a
few settings on, each in a fresh process, in alternating order (off between the settings), so that
a shared machine's load falls on both sides alike. For each run: clean MNIST test accuracy, the same
test images under a fixed random distortion (the strongest setting's layers with training=True,
seeded: a cheap proxy for other hands, not the photo benchmark), and the fit's seconds per epoch.

    PYTHONPATH=src python -m bench.augmentation [--model mlp] [--data data/processed] \
        [--out bench/AUGMENTATION.md]

Trains with the pipeline's own code (build, fit, for_inference) on the preprocess stage's splits,
without MLflow. Writes a Markdown table with the command, commit and load average, and prints it.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

# name -> models.<model>.augmentation; "off" runs between the others.
SETTINGS: dict[str, dict] = {
    "off": {"enabled": False},
    "all": {"enabled": True, "shift": 0.1, "rotation": 10, "zoom": 0.1, "stroke": 1},
    "mild": {"enabled": True, "shift": 0.05, "rotation": 5, "zoom": 0.05, "stroke": 1},
    "geometry": {"enabled": True, "shift": 0.1, "rotation": 10, "zoom": 0.1, "stroke": 0},
}
ORDER = ["off", "all", "mild"]
# The distortion the "distorted test" column applies to the test images, with a fixed seed.
DISTORTION = SETTINGS["all"]


def one(model: str, setting: dict, data: Path, epochs: int | None) -> dict:
    """Train `model` with `setting` as its augmentation; its scores and fit time."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from mnist_pipeline.core.params import Augmentation, load_params
    from mnist_pipeline.data.splits import load_split
    from mnist_pipeline.training.augmentation import augmentation
    from mnist_pipeline.training.fit_loop import fit, seed_everything
    from mnist_pipeline.training.models import build, compute_dtype, for_inference

    params = load_params().model(model)
    params = params.model_copy(update={"augmentation": Augmentation(**setting), "epochs": epochs or params.epochs})
    train, validation, test = (load_split(data, split) for split in ("train", "validation", "test"))
    seed_everything(params.seed)
    training = build(params, math.ceil(len(train[1]) / params.batch_size), compute_dtype(params))
    times: list[float] = []
    clock = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda *_: times.append(time.perf_counter()),
        on_epoch_end=lambda *_: times.append(time.perf_counter() - times.pop()),
    )
    started = time.perf_counter()
    fitted = fit(training, params, train, validation, callbacks=[clock])
    seconds = time.perf_counter() - started
    inference = for_inference(training, params)

    def accuracy(images) -> float:
        return float(np.mean(inference.predict(images, batch_size=1000, verbose=0).argmax(axis=1) == test[1]))

    distort = augmentation(Augmentation(**DISTORTION), seed=1234)
    assert distort is not None
    pixels = distort(test[0].astype("float32") / 255, training=True)
    distorted = np.clip(np.round(np.asarray(pixels) * 255), 0, 255).astype(np.uint8)
    return {
        "test_accuracy": accuracy(test[0]),
        "distorted_test_accuracy": accuracy(distorted),
        "val_accuracy": float(fitted.curves["val_accuracy"].iloc[-1]),
        "epochs": len(fitted.curves),
        "fit_seconds": seconds,
        # The first epoch traces the graph; the steady ones are what an epoch costs.
        "seconds_per_epoch": statistics.median(times[1:] or times),
    }


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--model", default="mlp")
    cli.add_argument("--data", type=Path, default=Path("data/processed"))
    cli.add_argument("--out", type=Path, default=Path("bench/AUGMENTATION.md"))
    cli.add_argument("--epochs", type=int, help="default: the model's in params.yaml (fewer: a smoke test, or timing)")
    cli.add_argument("--order", default=",".join(ORDER), help=f"settings to run, in order (default {','.join(ORDER)})")
    cli.add_argument("--one", help=argparse.SUPPRESS)  # a child process: one setting, JSON out
    args = cli.parse_args()
    if args.one:
        print(json.dumps(one(args.model, SETTINGS[args.one], args.data, args.epochs)))
        return

    load_start, started = os.getloadavg()[0], time.perf_counter()
    rows = []
    for name in args.order.split(","):
        command = [sys.executable, "-m", "bench.augmentation", "--model", args.model, "--data", str(args.data)]
        command += ["--epochs", str(args.epochs)] if args.epochs else []
        out = subprocess.run([*command, "--one", name], capture_output=True, text=True, check=True).stdout
        rows.append({"setting": name, **json.loads(out.strip().splitlines()[-1])})
        print(json.dumps(rows[-1]), flush=True)
    load_end = os.getloadavg()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    off = [row["seconds_per_epoch"] for row in rows if row["setting"] == "off"]
    lines = [
        "# Augmentation: clean accuracy, a distorted test set, and fit time",
        "",
        f"`PYTHONPATH=src python -m bench.augmentation {' '.join(sys.argv[1:])}` at commit "
        f"`{commit}` (plus the working tree), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{(time.perf_counter() - started) / 60:.1f} min in all; {os.cpu_count()} cores shared with other work, "
        f"load average (1 min) {load_start:.1f} at the start and {load_end:.1f} at the end: compare the "
        f"time ratios (each against the mean of the `off` runs), not absolute seconds.",
        "",
        f"Settings (models.{args.model}.augmentation): "
        + "; ".join(f"`{name}` = {yaml.safe_dump(s, default_flow_style=True).strip()}" for name, s in SETTINGS.items()),
        "Distorted test: MNIST's 10,000 test images through the `all` layers in training mode, seed 1234.",
        "",
        "| run | setting | clean test accuracy | distorted test accuracy | val accuracy | epochs "
        "| fit s | s per steady epoch | time × off |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, row in enumerate(rows, start=1):
        lines.append(
            f"| {i} | {row['setting']} | {row['test_accuracy']:.4f} | {row['distorted_test_accuracy']:.4f} "
            f"| {row['val_accuracy']:.4f} | {row['epochs']} | {row['fit_seconds']:.1f} "
            f"| {row['seconds_per_epoch']:.2f} | "
            + (f"{row['seconds_per_epoch'] / (sum(off) / len(off)):.2f} |" if off else "– (no run with it off) |")
        )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
