"""Milliseconds per batch of the training graph's non-matmul pieces that issue 25 replaced, each
beside what it replaced and beside the matmul of the layer they sit by, in one process:

    python -m bench.kernels [--batch 1024] [--repeats 50]

- the affine augmentation: TensorFlow's ImageProjectiveTransformV3 (keras.ops.image.affine_transform)
  against `augmentation.resample` (the same bilinear pixels as gathers, compiled by XLA);
- the stroke-width augmentation: its window ops as TensorFlow runs them one by one, against
  `augmentation.restroke` (the same ops compiled by XLA);
- dropout on a hidden layer's output: Keras's Dropout against `models.BytewiseDropout`;
- for scale, the bfloat16 matmul of a batch through a 512 × 512 layer.

Each is a `tf.function` called on the same tensors; the figure is the median (min–max) of the calls
after the first (which traces and compiles). Timings on a shared machine are noisy: compare the
pairs, taken in one run. Prints a Markdown table.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from bench.run import machine
from mnist_pipeline.training import augmentation
from mnist_pipeline.training.models import BytewiseDropout


def timed(function, *args, repeats: int) -> list[float]:
    function(*args)  # trace (and compile)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.asarray(function(*args))
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--batch", type=int, default=1024, help="images per batch (default: %(default)s)")
    cli.add_argument("--repeats", type=int, default=50, help="timed calls of each (default: %(default)s)")
    args = cli.parse_args()
    n, rng = args.batch, np.random.default_rng(0)
    images = tf.constant(rng.random((n, 28, 28, 1)).astype(np.float32))
    angle, scale = rng.uniform(-0.17, 0.17, n), 1 + rng.uniform(-0.1, 0.1, n)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    shift = rng.uniform(-2.8, 2.8, (2, n))
    six = tf.constant(np.stack([cos, sin, shift[0], -sin, cos, shift[1]], axis=1).astype(np.float32))
    eight = tf.concat([six, tf.zeros((n, 2))], axis=1)
    widths = tf.constant(rng.integers(-1, 2, (n, 1, 1, 1)), tf.int32)
    hidden = tf.constant(rng.random((n, 512)).astype(np.float32), tf.bfloat16)
    weights = tf.constant(rng.random((512, 512)).astype(np.float32), tf.bfloat16)

    def stroke_op_by_op(x, k):
        out = tf.where(k == 1, augmentation.window(x, 1, ops.maximum), x)
        return tf.where(k == -1, augmentation.window(x, 1, ops.minimum), out)

    keras_dropout, bytewise = keras.layers.Dropout(0.2, seed=1), BytewiseDropout(0.2, seed=1)
    rows = [
        ("affine: TensorFlow's kernel", tf.function(lambda x, t: ops.image.affine_transform(x, t)), (images, eight)),
        ("affine: `resample` (XLA)", augmentation.resample, (images, six)),
        ("stroke width: op by op", tf.function(stroke_op_by_op), (images, widths)),
        ("stroke width: `restroke` (XLA)", tf.function(lambda x, k: augmentation.restroke(x, k, 1)), (images, widths)),
        ("dropout 0.2, 512 units: Keras's", tf.function(lambda h: keras_dropout(h, training=True)), (hidden,)),
        ("dropout 0.2, 512 units: `BytewiseDropout`", tf.function(lambda h: bytewise(h, training=True)), (hidden,)),
        ("matmul 512 × 512, bfloat16 (for scale)", tf.function(lambda h: tf.matmul(h, weights)), (hidden,)),
    ]
    m = machine()
    print(f"`python -m bench.kernels --batch {n} --repeats {args.repeats}` at commit `{m['commit']}`, {m['date']}")
    print(f"on {m['cores']} cores ({m['cpu']}), load average (1 min) {m['load_before'][0]:.1f}.\n")
    print(f"| piece (batch of {n}) | ms per call, median (min–max) |\n| --- | --- |")
    for name, function, inputs in rows:
        ms = timed(function, *inputs, repeats=args.repeats)
        print(f"| {name} | {statistics.median(ms):.2f} ({min(ms):.2f}–{max(ms):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
