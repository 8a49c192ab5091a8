"""The registry's promotion under stress (issue 22). Two promotions at once: a better and a worse
model of one family, promoted by two real processes released together by a barrier, round after round,
on a SQLite store, on PostgreSQL and through an `mlflow server` (before, both read "no champion", both
registered, and the one that set the alias last kept it: the worse one in about half the rounds). And
a real `dvc repro -s evaluate@mlp` interrupted while it promotes (before: the alias moved, and DVC
reported the stage failed)."""

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import psutil
import pytest
import yaml
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.params import RegistryParams
from mnist_pipeline.evaluation.gates import Scores
from mnist_pipeline.evaluation.registry import ACCURACY_TAG, ALIAS, promote
from mnist_pipeline.tracking.store import local_store_uri
from tests.support.harness import make_repo, repo_env, sh, small_params, store_uri, tracking_server, write_params
from tests.support.servers import postgres

pytestmark = pytest.mark.slow  # real processes, a PostgreSQL cluster and a server
ROUNDS = 20
BETTER, WORSE = 0.99, 0.95


class Constant(PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[int]:
        return [0] * len(model_input)


def promoter(uri: str, accuracy: float, barrier, errors) -> None:
    """In a process of its own: log one model as a training does, then in each round wait for the
    other promoter and promote the model into that round's family."""
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("race")
        with mlflow.start_run() as run:
            logged = mlflow.pyfunc.log_model(name="mlp", python_model=Constant(), pip_requirements=[])
        for round_ in range(ROUNDS):
            barrier.wait(timeout=120)
            promote(family(round_), "mlp", logged.model_id, Scores(accuracy), run.info.run_id)
    except BaseException as exc:
        errors.put(f"{accuracy}: {type(exc).__name__}: {exc}")
        barrier.abort()
        raise


def family(round_: int) -> RegistryParams:
    return RegistryParams(enabled=True, min_accuracy=0.9, name_prefix=f"race{round_}-")


@contextmanager
def store(kind: str, folder: Path) -> Iterator[str]:
    """A new, empty store of `kind`, its tables made and the experiment created; yields its URI."""
    sqlite = local_store_uri(folder)  # with the busy timeout the stages use
    if kind == "postgresql":
        with postgres() as uri:
            MlflowClient(uri).create_experiment("race", artifact_location=(folder / "mlruns").as_uri())
            yield uri
    elif kind == "server":
        with tracking_server(folder, sqlite) as url:
            MlflowClient(url).create_experiment("race")
            yield url
    else:
        MlflowClient(sqlite).create_experiment("race", artifact_location=(folder / "mlruns").as_uri())
        yield sqlite


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "server"])
def test_the_better_of_two_simultaneous_promotions_is_champion_every_time(tmp_path, kind):
    spawn = multiprocessing.get_context("spawn")  # new interpreters, as two evaluate stages are
    with store(kind, tmp_path) as uri:
        barrier, errors = spawn.Barrier(2), spawn.Queue()
        workers = [spawn.Process(target=promoter, args=(uri, score, barrier, errors)) for score in (BETTER, WORSE)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=600)
        assert [w.exitcode for w in workers] == [0, 0], errors.get() if not errors.empty() else "a worker hung"

        client = MlflowClient(uri)
        champions = [
            float(client.get_model_version_by_alias(f"race{r}-mlp", ALIAS).tags[ACCURACY_TAG]) for r in range(ROUNDS)
        ]
        raced = sum(len(client.search_model_versions(f"name = 'race{r}-mlp'")) == 2 for r in range(ROUNDS))
    assert champions == [BETTER] * ROUNDS, f"the worse model is champion in {champions.count(WORSE)} of {ROUNDS}"
    # Rounds in which both read "no champion" and both registered: the race the alias must survive.
    print(f"{kind}: both promoters registered a version in {raced} of {ROUNDS} rounds")


# --- an interrupt while the evaluate stage promotes ----------------------------------------------
@pytest.fixture(scope="module")
def repo(tmp_path_factory, mnist_dir) -> Path:
    """A small repository whose mlp is trained (not evaluated, so nothing is registered yet)."""
    params = small_params("promotion")
    del params["models"]["logistic"]
    root = make_repo(tmp_path_factory.mktemp("promotion"), params, mnist_dir)
    sh(root, "dvc", "repro", "train@mlp")
    return root


# What the store holds once the promotion has reached a point: a version registered (the promotion is
# under way), or the alias set (it is over; the stage is ending).
REACHED = {
    "registered": "SELECT count(*) FROM model_versions WHERE name = ?",
    "alias set": "SELECT count(*) FROM registered_model_aliases WHERE name = ?",
}


def reached(db: Path, point: str, name: str) -> bool:
    """Whether the store holds what `point` names for model `name`, read straight from its file
    (MLflow's own client would take seconds to import and poll)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60) as connection:
            return connection.execute(REACHED[point], (name,)).fetchone()[0] > 0
    except sqlite3.OperationalError:  # the registry's tables are not there yet
        return False


def interrupt_at(repo: Path, point: str, name: str, log: Path) -> tuple[subprocess.Popen, bool]:
    """`dvc repro -s evaluate@mlp` under bash, and Ctrl-C (SIGINT to its process group, as a terminal
    sends it) as soon as the store shows the promotion has reached `point`. Returns dvc, once ended,
    and whether the stage was still running at the signal."""
    with open(log, "w") as out:
        dvc = subprocess.Popen(
            ["dvc", "repro", "-s", "evaluate@mlp"],
            cwd=repo,
            env=repo_env(repo, SHELL="/bin/bash"),
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    stage_running = False
    try:
        while dvc.poll() is None and not reached(repo / "mlflow.db", point, name):
            time.sleep(0.01)
        children = psutil.Process(dvc.pid).children(recursive=True) if dvc.poll() is None else []
        stage_running = any(child.cmdline()[-2:] == ["evaluate", "mlp"] for child in children)
        if dvc.poll() is None:
            os.killpg(dvc.pid, signal.SIGINT)
        dvc.wait(timeout=300)
    finally:
        if dvc.poll() is None:
            os.killpg(dvc.pid, signal.SIGKILL)
            dvc.wait()
    return dvc, stage_running


@pytest.mark.parametrize("point", list(REACHED))
def test_an_interrupt_during_promotion_ends_the_stage_as_done(repo, point):
    """The registry step is the stage's last act: once it has begun, an interrupt is held until it
    has ended, and the stage ends as done, all its outputs written, so DVC records what the registry
    holds. (An interrupt before it begins stops the stage with the registry unchanged.)"""
    prefix = point.replace(" ", "-") + "-"  # a family of its own, which also makes the stage stale
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["registry"]["name_prefix"] = prefix
    write_params(repo, params)
    log = repo / f"interrupted-{prefix}.log"
    dvc, stage_running = interrupt_at(repo, point, f"{prefix}mlp", log)
    output = log.read_text()
    assert stage_running, f"the stage had ended before the signal:\n{output}"
    # The signal came after the registration: the promotion had begun, so it must have ended.
    aliases = MlflowClient(store_uri(repo)).get_registered_model(f"{prefix}mlp").aliases
    assert str(aliases.get(ALIAS)) == "1", f"version 1 was registered but is not @{ALIAS}:\n{output}"
    assert dvc.returncode == 0, f"the alias moved, yet dvc exited {dvc.returncode}:\n{output}"
    locked = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert "evaluate@mlp" in locked, output
    for out in locked["evaluate@mlp"]["outs"]:
        assert (repo / out["path"]).is_file(), out["path"]
    if point == "registered":
        assert "SIGINT came while the registry was being updated: the stage finishes first" in output
    assert "Exception ignored" not in output and "Traceback" not in output, output
