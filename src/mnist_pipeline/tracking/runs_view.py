"""What the MLflow UI shows of the experiment: its training runs ranked by test accuracy.

MLflow 3.17 keeps a person's table settings (sort, columns, charts) in the browser, not on the
server; what the server can hold is a saved view, an experiment tag `mlflow.sharedViewState.<id>`
that the runs page applies when its URL names it (`viewStateShareKey=<id>`), and that its *Views*
menu lists. `make ui` prints a link to this one; the experiment's description links to it too, for
a person who comes from MLflow's home page (the runs page shows the description above the table)."""

import json
import time

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

VIEW_ID = "test-accuracy"
VIEW_NAME = "Test accuracy, best first"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"
DESCRIPTION_TAG = "mlflow.note.content"  # MLflow's experiment description
TEST_METRICS = ("test_accuracy", "test_macro_f1", "test_log_loss")
SECTION = "test-metrics"


def runs_link(experiment_id: str) -> str:
    """The runs page of model training in this view, relative to the UI's address."""
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_ID}"


def view_state() -> dict:
    """The runs page's settings as MLflow's UI writes them (ExperimentPageSearchFacetsState and
    ExperimentPageUIState): sorted by test accuracy, highest first; the test metrics as the first
    columns after the run's name and date; in the chart view, a bar chart of each before the rest."""
    metrics = [f"metrics.`{name}`" for name in TEST_METRICS]
    return {
        "orderByKey": metrics[0],
        "orderByAsc": False,
        "selectedColumns": [*metrics, "attributes.`Models`", "attributes.`Dataset`"],
        "columnOrder": ["attributes.`Run Name`", *metrics],
        "columnWidths": dict.fromkeys(metrics, 130),  # the names whole, not "test_accurac…"
        "compareRunSections": [
            {"uuid": SECTION, "name": "Test metrics", "display": True, "isReordered": False, "deleted": False}
        ],
        "compareRunCharts": [
            {
                "uuid": name,
                "type": "BAR",
                "metricKey": name,
                "runsCountToCompare": 10,
                "metricSectionId": SECTION,
                "deleted": False,
                "isGenerated": False,
            }
            for name in TEST_METRICS
        ],
    }


def description(experiment_id: str) -> str:
    return (
        "Digit classifiers trained by the MNIST pipeline; "
        f"[their test accuracy, best first]({runs_link(experiment_id)}) (or *{VIEW_NAME}* under *Views*)."
    )


def show_runs_by_test_accuracy(client: MlflowClient, experiment_id: str) -> None:
    """Give the experiment the saved view, and the description that links to it unless it has one
    already (a person's own stays). Writes only what differs, so a second call changes nothing."""
    tags = client.get_experiment(experiment_id).tags
    state = json.dumps(view_state())
    try:
        saved = json.loads(tags[VIEW_TAG])
        current = saved["name"] == VIEW_NAME and json.loads(saved["state"]) == view_state()
    except (KeyError, TypeError, ValueError):  # none yet, or not one this code wrote
        current = False
    if not current:
        now = int(time.time() * 1000)
        envelope = {"name": VIEW_NAME, "createdAt": now, "updatedAt": now, "state": state}
        set_experiment_tag(client, experiment_id, VIEW_TAG, json.dumps(envelope))
    if not tags.get(DESCRIPTION_TAG):
        set_experiment_tag(client, experiment_id, DESCRIPTION_TAG, description(experiment_id))


def set_experiment_tag(client: MlflowClient, experiment_id: str, key: str, value: str) -> None:
    """client.set_experiment_tag, tried once more if the store refuses it. Stages that open a new
    experiment together (`dvc exp run --run-all -j 2`, tune's workers) each find a tag missing and
    insert it; the store refuses the second insert of the key (an IntegrityError), and the second try
    finds the row and updates it. A store that refuses for another reason refuses again."""
    try:
        client.set_experiment_tag(experiment_id, key, value)
    except MlflowException:
        client.set_experiment_tag(experiment_id, key, value)
