"""A repository folder whose name is not a plain path in a URL (`r%41`, `rt_q?x=1`, `a#b`, spaces):
its SQLite stores (MLflow's mlflow.db and mlruns/, Optuna's optuna.db) open inside it, within seconds,
and nothing is created beside it (docs/reliability.md, row 12). Before, `r%41` read as `rA` and
MLflow retried "unable to open database file" for a minute; `rt_q?x=1` put the store in a file
`rt_q` beside the repository."""

import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from mnist_pipeline.tracking.sqlite_url import sqlite_file, sqlite_url
from mnist_pipeline.tracking.store import check_store, local_store_uri, use_experiment
from mnist_pipeline.tuning.optuna_study import default_storage, open_storage

NAMES = ["r%41", "rt_q?x=1", "a#b", "with spaces", "%zz?", "é?%2F"]


@pytest.mark.parametrize("name", [*NAMES, "line\nbreak"])
def test_the_url_names_the_file_as_sqlalchemy_reads_it(tmp_path, name):
    path = tmp_path / name / "mlflow.db"
    url = sqlite_url(path, timeout=60)
    assert make_url(url).database == str(path) and make_url(url).query == {"timeout": "60"}
    assert sqlite_file(url) == path


def test_an_ordinary_path_keeps_the_url_people_know(tmp_path):
    assert sqlite_url(tmp_path / "a b#c" / "mlflow.db") == f"sqlite:///{tmp_path}/a b#c/mlflow.db"
    assert sqlite_url(Path("/r/mlflow.db"), timeout=60) == "sqlite:////r/mlflow.db?timeout=60"
    assert sqlite_url(Path("/r%41/mlflow.db")) == "sqlite+pysqlite:////r%2541/mlflow.db"
    assert sqlite_file("http://127.0.0.1:5000") is None and sqlite_file("sqlite://") is None


@pytest.mark.parametrize("name", NAMES)
def test_the_stores_of_a_repository_with_an_unusual_name_open_inside_it(tmp_path, name, clean_env):
    root = (tmp_path / name).resolve()
    root.mkdir()
    started = time.monotonic()
    check_store(root)
    with mlflow.start_run(experiment_id=use_experiment("odd", root)) as run:
        mlflow.log_text("x", "note.txt")
    open_storage(default_storage(root)).engine.dispose()
    assert time.monotonic() - started < 20, "MLflow retried a store it could not open"

    assert list(tmp_path.iterdir()) == [root], "something was created beside the repository"
    assert {"mlflow.db", "optuna.db", "mlruns"} <= {p.name for p in root.iterdir()}
    stored = MlflowClient(local_store_uri(root)).get_run(run.info.run_id)
    assert stored.info.experiment_id == run.info.experiment_id
    assert (root / "mlruns" / run.info.run_id / "artifacts" / "note.txt").read_text() == "x"
