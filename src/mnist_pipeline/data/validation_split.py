"""The preprocess stage's work: a seeded, stratified validation split of the 60k training images, the
test set kept as it is, and the images per digit of each split."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from mnist_pipeline.core.atomic import atomic_file, write_text
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.layout import CLASS_COUNTS_FILE, DATA_SUMMARY_FILE
from mnist_pipeline.core.params import DataParams
from mnist_pipeline.data import idx
from mnist_pipeline.data.splits import save_splits

log = logging.getLogger(__name__)


def load_raw(raw_dir: Path) -> dict[str, np.ndarray]:
    """The four verified IDX files as arrays: train_x, train_y, test_x, test_y."""
    arrays = []
    for name in idx.FILENAMES:
        path = raw_dir / name
        if not path.is_file():
            raise PipelineError(f"{path} is missing; run the download stage first (dvc repro download)")
        data = path.read_bytes()
        idx.verify(name, data)
        arrays.append(idx.decode(data, name))
    return dict(zip(("train_x", "train_y", "test_x", "test_y"), arrays, strict=True))


def split(raw: dict[str, np.ndarray], params: DataParams) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train and validation drawn from the 60k training images, stratified by digit."""
    x, y = raw["train_x"], raw["train_y"]
    if params.validation_size + (params.train_size or 0) > len(y):
        raise PipelineError(
            f"data.validation_size + data.train_size = {params.validation_size + (params.train_size or 0)} "
            f"exceeds the {len(y)} training images; lower one of them in params.yaml"
        )
    train_idx, val_idx = train_test_split(
        np.arange(len(y)),
        test_size=params.validation_size,
        train_size=params.train_size,
        stratify=y,
        random_state=params.seed,
    )
    return {
        "train": (x[train_idx], y[train_idx]),
        "validation": (x[val_idx], y[val_idx]),
        "test": (raw["test_x"], raw["test_y"]),
    }


def class_counts(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    counts = {name: pd.Series(y).value_counts().sort_index() for name, (_, y) in splits.items()}
    return pd.DataFrame(counts).fillna(0).astype(int).rename_axis("digit").reset_index()


def preprocess(params: DataParams, raw_dir: Path, out_dir: Path, reports_dir: Path) -> None:
    splits = split(load_raw(raw_dir), params)
    save_splits(splits, out_dir)
    counts = class_counts(splits)
    with atomic_file(reports_dir / CLASS_COUNTS_FILE) as tmp:
        counts.to_csv(tmp, index=False)
    summary = {"images": {name: len(y) for name, (_, y) in splits.items()}}
    write_text(reports_dir / DATA_SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    log.info("split: %s", ", ".join(f"{n} {c}" for n, c in summary["images"].items()))
