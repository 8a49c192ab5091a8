"""A sweep of 20 experiments through the DVC queue with two workers: every one lands in DVC and
in MLflow. Minutes long, so not part of `make test`: run it with `python -m pytest -m load`."""

import pytest
from mlflow.tracking import MlflowClient

from tests.support.harness import make_repo, sh, small_params, store_uri

pytestmark = pytest.mark.load
N_EXPERIMENTS = 20


def test_twenty_queued_experiments_with_two_workers_all_land(tmp_path, mnist_dir):
    repo = make_repo(tmp_path / "repo", small_params("load"), mnist_dir)
    sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline results")
    # None equal to the baseline's rate: DVC would restore that one from its run cache, training nothing.
    rates = [round(0.0001 * (i + 1), 4) for i in range(N_EXPERIMENTS)]
    assert small_params("load")["models"]["logistic"]["learning_rate"] not in rates
    for rate in rates:
        sh(repo, "dvc", "exp", "run", "--queue", "-S", f"models.logistic.learning_rate={rate}")
    sh(repo, "dvc", "exp", "run", "--run-all", "-j", "2")

    names = sh(repo, "dvc", "exp", "ls", "--name-only").stdout.split()
    assert len(names) == N_EXPERIMENTS
    client = MlflowClient(store_uri(repo))
    experiment = client.get_experiment_by_name("load")
    assert experiment is not None, "load"
    swept = client.search_runs([experiment.experiment_id], "tags.model = 'logistic' and tags.`dvc.exp_name` != ''")
    assert sorted(r.data.tags["dvc.exp_name"] for r in swept) == sorted(names)
    assert sorted(float(r.data.params["learning_rate"]) for r in swept) == rates
    assert all(r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics for r in swept)
