"""What a person sees of MLflow. `make ui` (python -m mnist_pipeline ui) serves the UI on the
pipeline's store and prints the link to the experiment's training runs, or says in one line that
the port is taken. In the UI (headless Debian Chromium, driven by Playwright), a person starting at
the home page finds both models' runs with their test accuracy, the logged models under their own
names with their test metrics, and the compare view. Each step's screenshot is kept as
test-output/screenshots/mlflow-<step>.png."""

import json

from mlflow.tracking import MlflowClient

from mnist_pipeline.tracking.runs_view import DESCRIPTION_TAG, VIEW_NAME, VIEW_TAG, view_state
from mnist_pipeline.tracking.store import ensure_experiment, tracking_uri
from tests.support.harness import REPO, sh
from tests.support.stores import empty_store

KIND = "mlflow.experimentKind"


def test_make_ui_passes_its_port_on_and_open_asks_for_the_browser():
    assert "python -m mnist_pipeline ui --port 5001\n" in sh(REPO, "make", "-n", "ui", "PORT=5001").stdout
    assert "python -m mnist_pipeline ui --port 5000 --open\n" in sh(REPO, "make", "-n", "ui", "OPEN=1").stdout


def test_experiments_are_marked_as_model_training_new_and_existing_once(tmp_path, monkeypatch):
    for variable in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(variable, raising=False)
    empty_store(tmp_path)  # MLflow's tables, copied (tests/support/stores.py): the store is not what is tested
    client = MlflowClient(tracking_uri(tmp_path))
    new = ensure_experiment("new", tmp_path)
    assert client.get_experiment(new).tags[KIND] == "custom_model_development"
    assert client.get_experiment(new).artifact_location == (tmp_path / "mlruns").as_uri()

    untagged = client.create_experiment("untagged")
    inferred = client.create_experiment("inferred", tags={KIND: "genai_development_inferred"})
    for name, experiment_id in (("untagged", untagged), ("inferred", inferred), ("new", new)):
        assert ensure_experiment(name, tmp_path) == experiment_id
        tagged = client.get_experiment(experiment_id)
        assert tagged.tags[KIND] == "custom_model_development"
        assert ensure_experiment(name, tmp_path) == experiment_id  # again: nothing changes
        assert client.get_experiment(experiment_id).last_update_time == tagged.last_update_time


def test_experiments_get_the_view_by_test_accuracy_and_a_description_linking_to_it(tmp_path, monkeypatch):
    for variable in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(variable, raising=False)
    empty_store(tmp_path)  # MLflow's tables, copied (tests/support/stores.py): the store is not what is tested
    client = MlflowClient(tracking_uri(tmp_path))
    new = ensure_experiment("new", tmp_path)
    described = client.create_experiment("described", tags={DESCRIPTION_TAG: "a person's own words"})
    stale = client.create_experiment("stale", tags={VIEW_TAG: json.dumps({"name": VIEW_NAME, "state": "{}"})})
    for name, experiment_id in (("new", new), ("described", described), ("stale", stale)):
        assert ensure_experiment(name, tmp_path) == experiment_id
        tags = client.get_experiment(experiment_id).tags
        saved = json.loads(tags[VIEW_TAG])  # as MLflow's UI saves a view: name, times, state as JSON text
        assert saved["name"] == VIEW_NAME and isinstance(saved["createdAt"], int)
        state = json.loads(saved["state"])
        assert state == view_state()
        assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`test_accuracy`", False)
        assert state["selectedColumns"][0] == state["columnOrder"][1] == "metrics.`test_accuracy`"
        link = f"(#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=test-accuracy)"
        if name == "described":
            assert tags[DESCRIPTION_TAG] == "a person's own words"  # kept
        else:
            assert link in tags[DESCRIPTION_TAG]
        updated = client.get_experiment(experiment_id).last_update_time
        ensure_experiment(name, tmp_path)  # again: nothing changes
        assert client.get_experiment(experiment_id).last_update_time == updated
