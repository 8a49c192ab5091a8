"""Tiny inputs for in-process tests of the train and evaluate stages: made-up digit images in a
processed folder, params for them, and an MLflow store of their own. No network, no MNIST."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.data.splits import save_splits
from mnist_pipeline.tracking.sqlite_url import sqlite_url
from tests.support.harness import REPO
from tests.support.stores import empty_store

# What else would pick the store, the experiment or the run, or tag the run.
MLFLOW_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "DVC_ROOT",
    "DVC_STAGE",
    "DVC_EXP_NAME",
    "DVC_EXP_BASELINE_REV",
)


def digits(n: int, seed: int, signal: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """`n` uint8 images (28, 28), ten classes in turn: digit k is a faint bar on row 2k + 4 under
    noise. Learnable, but a few dozen of them are soon overfitted, so validation loss turns up."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 256 - signal, (n, 28, 28))
    for k in range(10):
        x[y == k, 2 * k + 4, 4:24] += signal
    return x.astype(np.uint8), y


def tiny_layout(root: Path, train: int = 60, validation: int = 60, test: int = 50) -> Layout:
    """A repository root whose data/processed holds small train, validation and test splits, and an
    empty MLflow store (tests/support/stores.py: its tables made once per process)."""
    layout = Layout(root)
    root.mkdir(parents=True, exist_ok=True)
    empty_store(root)
    save_splits(
        {"train": digits(train, 1), "validation": digits(validation, 2), "test": digits(test, 3)}, layout.processed
    )
    return layout


def tiny_params(experiment: str = "tiny", registry: dict | None = None, **model: object) -> Params:
    """The shipped params.yaml with one model, `mlp`: small, a few epochs, with `model`'s keys over it."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mlp = raw["models"]["mlp"] | {
        "hidden_units": [32],
        "epochs": 2,
        "batch_size": 20,
        "lr_schedule": "constant",
        "learning_rate": 0.003,
        "early_stopping_patience": 0,
    }
    raw["models"] = {"mlp": mlp | model}
    raw["data"] |= {"validation_size": 60, "train_size": 60}
    raw["mlflow"]["experiment"] = experiment
    raw["registry"] |= registry or {"enabled": False}
    return Params.model_validate(raw)


@contextmanager
def cleared_env() -> Iterator[pytest.MonkeyPatch]:
    """Nothing in the environment picks the store, experiment or run; afterwards, the environment
    and MLflow's global state as they were. (MLflow itself writes MLFLOW_TRACKING_URI and
    MLFLOW_EXPERIMENT_ID into os.environ when a stage sets them.)"""
    with pytest.MonkeyPatch.context() as env:
        for name in MLFLOW_ENV:
            env.setenv(name, "")  # so that the context puts back what was there, or nothing
            env.delenv(name)
        try:
            yield env
        finally:
            as_if_a_new_process()


@pytest.fixture
def clean_env():
    with cleared_env() as env:
        yield env


def as_if_a_new_process() -> None:
    """Forget the store and experiment the last stage set, as the next stage's process would."""
    while mlflow.active_run():
        mlflow.end_run()
    # None: back to the default, and MLFLOW_TRACKING_URI unset; MLflow's annotation omits it
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.tracking.fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def store_uri(layout: Layout) -> str:
    return sqlite_url(layout.root / "mlflow.db")
