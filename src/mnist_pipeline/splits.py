"""The data splits on disk: data/processed/{train,validation,test}.npz, uint8 images and labels.

Written by the preprocess stage, read by train and evaluate (and the tests); kept apart so that no
stage imports another."""

from pathlib import Path

import numpy as np

from mnist_pipeline.atomic import atomic_dir
from mnist_pipeline.errors import PipelineError


def save_splits(splits, out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        for name, (x, y) in splits.items():
            np.savez(tmp / f"{name}.npz", x=x, y=y)


def load_split(processed_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    path = processed_dir / f"{name}.npz"
    if not path.is_file():
        raise PipelineError(f"{path} is missing; run the preprocess stage first (dvc repro preprocess)")
    with np.load(path, allow_pickle=False) as npz:
        return npz["x"], npz["y"]
