"""bench/kernels.py, the per-batch timings of the training graph's replaced pieces: each row is
timed, and each replacement computes what it replaced (the figures compare like with like)."""

import re
import sys

import pytest

from bench import kernels


def test_every_piece_is_timed(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["kernels", "--batch", "16", "--repeats", "2"])
    kernels.main()
    rows = re.findall(
        r"^\| (.+?) \| (\d+\.\d\d) \((\d+\.\d\d)–(\d+\.\d\d)\) \|$", capsys.readouterr().out, re.MULTILINE
    )
    assert len(rows) == 7, rows
    assert all(float(low) <= float(median) <= float(high) for _, median, low, high in rows)


@pytest.mark.parametrize("width", [1, -1, 0])
def test_the_compiled_stroke_is_the_op_by_op_stroke(width):
    import numpy as np
    from keras import ops

    from mnist_pipeline.training import augmentation

    images = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    k = np.full((4, 1, 1, 1), width, np.int32)
    by_op = images
    if width:
        by_op = np.asarray(augmentation.window(images, 1, ops.maximum if width > 0 else ops.minimum))
    np.testing.assert_allclose(np.asarray(augmentation.restroke(images, k, 1)), by_op)
