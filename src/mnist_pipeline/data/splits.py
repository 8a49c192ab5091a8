"""The data splits on disk: data/processed/{train,validation,test}.npz, uint8 images and labels.

Written by the preprocess stage, read by train and evaluate (and the tests); kept apart so that no
stage imports another."""

import zipfile
import zlib
from pathlib import Path

import numpy as np

from mnist_pipeline.core.atomic import atomic_dir
from mnist_pipeline.core.errors import PipelineError, first_line


def save_splits(splits, out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        for name, (x, y) in splits.items():
            np.savez(tmp / f"{name}.npz", x=x, y=y)


def load_split(processed_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    path = processed_dir / f"{name}.npz"
    if not path.is_file():
        raise PipelineError(f"{path} is missing; run the preprocess stage first (dvc repro preprocess)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz["x"], npz["y"]
    except (zipfile.BadZipFile, zlib.error, ValueError, KeyError, OSError, EOFError) as exc:
        # Cut short, overwritten or edited: DVC has the stage's copy, or the stage makes it again.
        out = f"{processed_dir.parent.name}/{processed_dir.name}"
        raise PipelineError(
            f"{path}: not a readable split ({type(exc).__name__}: {first_line(exc)}); restore it "
            f"with `dvc checkout {out}` or rebuild it with `dvc repro -f preprocess`"
        ) from None
