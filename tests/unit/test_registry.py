"""The registry's rules on a real SQLite store, with tiny logged models: the min_accuracy gate,
`enabled: false`, a champion that moves only when beaten, and never another model under these numbers."""

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import RegistryParams
from mnist_pipeline.evaluation.registry import ALIAS, promote, settle_champion
from tests.support.tiny import cleared_env


class Constant(PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[int]:
        return [0] * len(model_input)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for this module; each test registers under a name prefix of its own. Its
    artifacts beside it: a store's default is ./mlruns, wherever pytest runs."""
    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with cleared_env():
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        client.create_experiment("registry", artifact_location=(folder / "mlruns").as_uri())
        mlflow.set_experiment("registry")
        yield client


def logged_model(name: str = "mlp") -> tuple[str, str]:
    """A tiny model logged by a run of its own, as training logs one: its id (`m-…`) and the run's."""
    with mlflow.start_run() as run:
        logged = mlflow.pyfunc.log_model(name=name, python_model=Constant(), pip_requirements=[])
    return logged.model_id, run.info.run_id


def promote_new(params: RegistryParams, accuracy: float) -> str | None:
    """Promote a new mlp model under `accuracy`, as evaluating its training run does."""
    model_id, run_id = logged_model()
    return promote(params, "mlp", model_id, accuracy, run_id)


def registry(prefix: str, enabled: bool = True) -> RegistryParams:
    return RegistryParams(enabled=enabled, min_accuracy=0.9, name_prefix=prefix)


def champion(client: MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, ALIAS).version)
    except MlflowException:
        return None


def versions(client: MlflowClient, name: str) -> int:
    return len(client.search_model_versions(f"name = '{name}'"))


@pytest.mark.parametrize(
    ("accuracy", "registered"), [(0.8999, False), (0.9, True), (0.95, True)], ids=["below", "at", "above"]
)
def test_min_accuracy_gate(store, accuracy, registered):
    params = registry(f"gate-{accuracy}-")
    version = promote_new(params, accuracy)
    name = f"gate-{accuracy}-mlp"
    assert (None if version is None else str(version)) == ("1" if registered else None)
    assert champion(store, name) == ("1" if registered else None)
    assert len(store.search_registered_models(f"name = '{name}'")) == registered


def test_disabled_registers_nothing(store):
    assert promote_new(registry("off-", enabled=False), 0.99) is None
    assert store.search_registered_models("name = 'off-mlp'") == []


def test_the_champion_moves_only_when_beaten(store):
    params, name = registry("duel-"), "duel-mlp"
    assert str(promote_new(params, 0.92)) == "1" and champion(store, name) == "1"
    for worse_or_equal in (0.91, 0.92):
        assert promote_new(params, worse_or_equal) is None
        assert champion(store, name) == "1" and versions(store, name) == 1
    assert str(promote_new(params, 0.93)) == "2"
    assert champion(store, name) == "2" and versions(store, name) == 2
    assert store.get_model_version(name, "2").tags["test_accuracy"] == "0.93"


@pytest.mark.parametrize(
    ("logged_as", "by_another_run"), [("logistic", False), ("mlp", True)], ids=["another-model", "another-run"]
)
def test_a_model_another_training_logged_is_never_registered(store, logged_as, by_another_run):
    """The issue's case: the MLP's test accuracy must not promote the logistic model, nor an mlp that
    some other run logged."""
    params, name = registry(f"wrong-{logged_as}-{by_another_run}-"), f"wrong-{logged_as}-{by_another_run}-mlp"
    model_id, run_id = logged_model(logged_as)
    if by_another_run:
        _, run_id = logged_model()
    with pytest.raises(
        PipelineError,
        match=f"^logged model {model_id} is model '{logged_as}' of run .*, not 'mlp' of "
        f"run {run_id}: not registered as {name} under that run's test accuracy$",
    ):
        promote(params, "mlp", model_id, 0.99, run_id)
    assert store.search_registered_models(f"name = '{name}'") == []


def test_a_promotion_racing_a_better_one_leaves_the_alias_on_the_better(store):
    """The race of issue 22, one step at a time: the better model is registered but its promoter has
    not set the alias yet when the worse one, having read "no champion", registers too. The worse
    one's promotion must leave @champion on the better version, and so must the better one's."""
    params, name = registry("race-"), "race-mlp"
    better_id, _ = logged_model()
    mlflow.register_model(f"models:/{better_id}", name, tags={"test_accuracy": "0.99"})
    assert str(promote_new(params, 0.95)) == "2"
    assert champion(store, name) == "1" and versions(store, name) == 2
    store.set_registered_model_alias(name, ALIAS, "2")  # the worse promoter's set, landing late
    settled = settle_champion(store, name)
    assert settled is not None and str(settled.version) == "1"
    assert champion(store, name) == "1"
