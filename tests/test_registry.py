"""The registry's rules on a real SQLite store, with tiny logged models: the min_accuracy gate,
`enabled: false`, and a champion that moves only when beaten."""

import mlflow
import mlflow.pyfunc
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.config import RegistryParams
from mnist_pipeline.registry import ALIAS, promote

from tiny import cleared_env


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[int]:
        return [0] * len(model_input)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for this module; each test registers under a name prefix of its own."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    with cleared_env():
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("registry")
        yield MlflowClient(uri)


def logged_model() -> str:
    """A tiny model logged by a run of its own, as training logs one: its id (`m-…`)."""
    with mlflow.start_run():
        return mlflow.pyfunc.log_model(name="mlp", python_model=Constant(), pip_requirements=[]).model_id


def registry(prefix: str, **params) -> RegistryParams:
    return RegistryParams(**({"enabled": True, "min_accuracy": 0.9, "name_prefix": prefix} | params))


def champion(client: MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, ALIAS).version)
    except MlflowException:
        return None


def versions(client: MlflowClient, name: str) -> int:
    return len(client.search_model_versions(f"name = '{name}'"))


@pytest.mark.parametrize("accuracy, registered", [(0.8999, False), (0.9, True), (0.95, True)],
                         ids=["below", "at", "above"])
def test_min_accuracy_gate(store, accuracy, registered):
    params = registry(f"gate-{accuracy}-")
    version = promote(params, "mlp", logged_model(), accuracy)
    name = f"gate-{accuracy}-mlp"
    assert (None if version is None else str(version)) == ("1" if registered else None)
    assert champion(store, name) == ("1" if registered else None)
    assert len(store.search_registered_models(f"name = '{name}'")) == registered


def test_disabled_registers_nothing(store):
    assert promote(registry("off-", enabled=False), "mlp", logged_model(), 0.99) is None
    assert store.search_registered_models("name = 'off-mlp'") == []


def test_the_champion_moves_only_when_beaten(store):
    params, name = registry("duel-"), "duel-mlp"
    assert str(promote(params, "mlp", logged_model(), 0.92)) == "1" and champion(store, name) == "1"
    for worse_or_equal in (0.91, 0.92):
        assert promote(params, "mlp", logged_model(), worse_or_equal) is None
        assert champion(store, name) == "1" and versions(store, name) == 1
    assert str(promote(params, "mlp", logged_model(), 0.93)) == "2"
    assert champion(store, name) == "2" and versions(store, name) == 2
    assert store.get_model_version(name, "2").tags["test_accuracy"] == "0.93"
