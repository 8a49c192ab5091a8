"""The MLflow UI, in headless Debian Chromium driven by Playwright, shows what the pipeline logged:
both models' runs on the experiment page, side by side in the compare view, and each run's
test accuracy and params. Screenshots land in the test's output folder."""

import json

import pytest
from mlflow.tracking import MlflowClient

from conftest import TRAINED_EXPERIMENT, store_uri, tracking_server

@pytest.fixture(scope="module")
def ui(trained_repo, tmp_path_factory):
    """An `mlflow server` on 127.0.0.1 over the store the pipeline filled; yields its URL."""
    with tracking_server(tmp_path_factory.mktemp("ui"), store_uri(trained_repo)) as url:
        yield url


def test_the_ui_lists_both_models_runs_with_their_test_accuracy_and_params(trained_repo, ui, page, tmp_path):
    client = MlflowClient(store_uri(trained_repo))
    experiment = client.get_experiment_by_name(TRAINED_EXPERIMENT)
    runs = {run.data.tags["model"]: run for run in client.search_runs(
        [experiment.experiment_id], "attributes.status = 'FINISHED' and tags.`dvc.stage` LIKE 'train@%'")}
    assert set(runs) == {"logistic", "mlp"}

    page.goto(f"{ui}/#/experiments/{experiment.experiment_id}/runs")
    for run in runs.values():
        page.get_by_text(run.info.run_name, exact=True).first.wait_for()
    page.get_by_text("mnist-mlp", exact=False).first.wait_for()  # the registered model beside its run
    page.screenshot(path=tmp_path / "experiment.png", full_page=True)

    ids = [run.info.run_id for run in runs.values()]
    page.goto(f"{ui}/#/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([experiment.experiment_id])}")
    page.get_by_text("Run details").first.wait_for()
    for run in runs.values():
        page.get_by_text(run.info.run_name, exact=True).first.wait_for()
    learning_rates = page.get_by_text("learning_rate", exact=True).first.locator("xpath=ancestor::tr[1]").inner_text()
    assert all(run.data.params["learning_rate"] in learning_rates for run in runs.values())
    page.screenshot(path=tmp_path / "compare.png", full_page=True)

    for model, run in runs.items():
        page.goto(f"{ui}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}")
        page.get_by_text("test_accuracy", exact=True).first.wait_for()
        text = page.inner_text("body")
        assert f"test_accuracy\n{run.data.metrics['test_accuracy']}" in text
        for param in ("type", "learning_rate", "epochs"):
            assert f"{param}\n{run.data.params[param]}" in text
        page.screenshot(path=tmp_path / f"run-{model}.png", full_page=True)
    assert all((tmp_path / name).stat().st_size > 10_000 for name in ("experiment.png", "compare.png"))
