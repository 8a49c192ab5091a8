"""`mlflow run` on the MLproject: the train entry point gives a run shaped like `dvc repro`'s."""

from mlflow.tracking import MlflowClient

from tests.support.harness import TRAINED_EXPERIMENT, sh, store_uri


def artifact_paths(client, run_id, path=None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_mlflow_run_train_with_overrides_logs_a_run_shaped_like_dvc_repro(own_trained_repo):
    repo = own_trained_repo
    client = MlflowClient(store_uri(repo))
    experiment = client.get_experiment_by_name(TRAINED_EXPERIMENT)
    assert experiment is not None, TRAINED_EXPERIMENT

    def mlp_runs():
        return client.search_runs([experiment.experiment_id], "tags.model = 'mlp'", order_by=["attributes.start_time"])

    from_dvc = mlp_runs()[0]
    sh(
        repo,
        "mlflow",
        "run",
        ".",
        "-e",
        "train",
        "-P",
        "model=mlp",
        "-P",
        "epochs=2",
        "-P",
        "dropout=0.3",
        "--env-manager",
        "local",
        "--experiment-name",
        TRAINED_EXPERIMENT,
    )
    from_mlflow_run = mlp_runs()[-1]

    assert from_mlflow_run.info.status == "FINISHED"
    assert from_mlflow_run.data.tags["mlflow.project.entryPoint"] == "train"
    assert from_mlflow_run.data.params["epochs"] == "2" and from_mlflow_run.data.params["dropout"] == "0.3"
    assert [m.step for m in client.get_metric_history(from_mlflow_run.info.run_id, "val_loss")] == [1, 2]
    assert set(from_mlflow_run.data.params) == set(from_dvc.data.params)
    assert set(from_mlflow_run.data.metrics) == set(from_dvc.data.metrics)
    # The same artifacts, but the model card: the registry writes it into a run whose model it
    # registers, and the 2-epoch run may or may not beat the champion the first run set.
    card = {"model_card.md"}
    paths = artifact_paths(client, from_mlflow_run.info.run_id)
    assert paths - card == artifact_paths(client, from_dvc.info.run_id) - card
    registered = client.search_model_versions(f"name = 'mnist-mlp' AND run_id = '{from_mlflow_run.info.run_id}'")
    assert (card <= paths) == bool(registered)
    assert {"model", "git.commit", "git.dirty"} <= set(from_mlflow_run.data.tags)
    logged = client.search_logged_models(
        [experiment.experiment_id], filter_string=f"source_run_id = '{from_mlflow_run.info.run_id}'"
    )
    assert len(logged) == 1


def test_a_bad_override_stops_mlflow_run_with_the_params_error(own_trained_repo):
    done = sh(
        own_trained_repo,
        "mlflow",
        "run",
        ".",
        "-e",
        "train",
        "-P",
        "model=mlp",
        "-P",
        "epochs=ten",
        "--env-manager",
        "local",
        "--experiment-name",
        TRAINED_EXPERIMENT,
        check=False,
    )
    assert done.returncode != 0
    assert "error: override: models.mlp.epochs = 'ten': Input should be a valid integer" in done.stderr
