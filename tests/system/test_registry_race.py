"""Two promotions at once (issue 22): a better and a worse model of one family, promoted by two real
processes released together by a barrier, round after round, on a SQLite store, on PostgreSQL and
through an `mlflow server`. Before, both read "no champion", both registered, and the one that set the
alias last kept it: the worse one in about half the rounds."""

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.params import RegistryParams
from mnist_pipeline.evaluation.registry import ACCURACY_TAG, ALIAS, promote
from mnist_pipeline.tracking.store import local_store_uri
from tests.support.harness import tracking_server
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
            promote(family(round_), "mlp", logged.model_id, accuracy, run.info.run_id)
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
