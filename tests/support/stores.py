"""What the tests of runs left RUNNING share (test_stale_runs.py in both tiers): no tracking store or
experiment chosen from outside, a folder for a local store, and a client on it; and a new local
store's tables, made once per process (`empty_store`)."""

import functools
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mnist_pipeline.tracking.sqlite_url import sqlite_url
from tests.support.harness import REPO, store_uri

TRACKING_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID", "DVC_ROOT", "DVC_STAGE")


def forget_experiment() -> None:
    for name in TRACKING_ENV:
        os.environ.pop(name, None)
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: back to the default; MLflow's annotation omits it


@pytest.fixture
def no_tracking_env(monkeypatch):
    """No store or experiment chosen from outside; none left behind (mlflow.set_experiment sets
    MLFLOW_EXPERIMENT_ID, which the next use_experiment would follow)."""
    for name in TRACKING_ENV:
        monkeypatch.delenv(name, raising=False)
    yield
    forget_experiment()


def client_for(root: Path) -> MlflowClient:
    mlflow.set_tracking_uri(store_uri(root))
    return MlflowClient()


def status(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).info.status


@functools.cache
def _empty_store_bytes() -> bytes:
    """A new SQLite store with MLflow's tables and no experiment: MLflow adds its Default experiment
    (with an artifact location beside the store) to whatever store it opens without one."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mlflow.db"
        MlflowClient(sqlite_url(path)).search_experiments()
        with sqlite3.connect(path) as db:
            db.execute("DELETE FROM experiments")
        db.close()
        return path.read_bytes()


def empty_store(folder: Path) -> Path:
    """`folder`/mlflow.db as MLflow makes it on first use, before any experiment: creating the tables
    (alembic's migrations) costs over a second of CPU per store, a copy a few milliseconds."""
    path = folder / "mlflow.db"
    path.write_bytes(_empty_store_bytes())
    return path


@pytest.fixture
def store(tmp_path) -> Path:
    """A folder with the shipped params.yaml (the CLI reads it) and a local store."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    empty_store(tmp_path)
    return tmp_path
