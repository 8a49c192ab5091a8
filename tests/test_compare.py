"""`compare`: the leaderboard read back from a store the pipeline filled."""

import io

import pandas as pd
from mlflow.tracking import MlflowClient

from conftest import TRAINED_EXPERIMENT, sh, store_uri


def compare(repo, *args, check=True):
    return sh(repo, "python", "-m", "mnist_pipeline", "compare", *args, check=check)


def finished_runs(repo):
    client = MlflowClient(store_uri(repo))
    experiment = client.get_experiment_by_name(TRAINED_EXPERIMENT)
    return client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")


def test_the_leaderboard_ranks_every_finished_run_by_test_accuracy(trained_repo):
    table = pd.read_csv(io.StringIO(compare(trained_repo, "--format", "csv").stdout))
    runs = {run.info.run_id: run for run in finished_runs(trained_repo)}
    assert sorted(table["run_id"]) == sorted(runs) and len(runs) >= 2
    assert list(table["rank"]) == list(range(1, len(runs) + 1))
    assert table["test_accuracy"].is_monotonic_decreasing
    for row in table.itertuples():
        run = runs[row.run_id]
        assert row.model == run.data.tags["model"]
        assert row.test_accuracy == run.data.metrics["test_accuracy"]
        assert row.test_macro_recall == run.data.metrics["test_macro_recall"]
        assert str(row.epochs) == run.data.params["epochs"]
    assert {"hidden_units", "dropout", "learning_rate", "test_macro_precision"} <= set(table.columns)


def test_filter_by_model_sort_by_any_metric_and_markdown(trained_repo):
    only_mlp = pd.read_csv(io.StringIO(compare(trained_repo, "--model", "mlp", "--format", "csv").stdout))
    assert set(only_mlp["model"]) == {"mlp"}
    by_loss = pd.read_csv(io.StringIO(compare(trained_repo, "--sort-by", "test_log_loss", "--format", "csv").stdout))
    assert by_loss["test_log_loss"].is_monotonic_increasing  # lower is better for a loss
    by_recall = pd.read_csv(io.StringIO(compare(trained_repo, "--sort-by", "recall_3", "--ascending",
                                                "--limit", "1", "--format", "csv").stdout))
    lowest = min(run.data.metrics["recall_3"] for run in finished_runs(trained_repo))
    assert len(by_recall) == 1 and by_recall["recall_3"][0] == lowest
    markdown = compare(trained_repo, "--format", "markdown").stdout.splitlines()
    assert markdown[0].replace(" ", "").startswith("|rank|model|") and "test_accuracy" in markdown[0]
    assert set(markdown[1]) <= set("|-:")
    text = compare(trained_repo).stdout.splitlines()
    assert text[0].split()[:2] == ["rank", "model"] and len(text) == 1 + len(finished_runs(trained_repo))


def test_unknown_metric_or_experiment_is_one_line_naming_the_fix(trained_repo):
    done = compare(trained_repo, "--sort-by", "test_acc", check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("error: no metric 'test_acc' in these runs; sort by one of: ")
    assert "test_accuracy" in done.stderr
    done = compare(trained_repo, "--experiment", "nope", check=False)
    assert done.returncode == 1 and "error: no experiment 'nope' in " in done.stderr
