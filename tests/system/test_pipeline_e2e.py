"""The real `dvc repro` in a throwaway git repo, on a few hundred images, against a real SQLite store."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import RegistryParams
from mnist_pipeline.evaluation.gates import Scores, judge
from mnist_pipeline.tracking.run_file import read_model_id
from tests.support.harness import (
    REPO,
    code_deps,
    make_repo,
    repo_env,
    sh,
    small_params,
    stages_run,
    store_uri,
    write_params,
)

pytestmark = pytest.mark.e2e
EXPERIMENT = "e2e"
FIRST_REPRO = "first_repro"  # untracked, like first_repro.log


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mnist_dir):
    root = make_repo(tmp_path_factory.mktemp("pipeline"), small_params(EXPERIMENT), mnist_dir)
    # Python lists every module each stage imports (on stderr, kept in order with DVC's own lines).
    first = subprocess.run(
        ["dvc", "repro"],
        cwd=root,
        env=repo_env(root, PYTHONPROFILEIMPORTTIME="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert first.returncode == 0, first.stdout[-5000:]
    root.joinpath("first_repro.log").write_text(first.stdout)
    # What the first repro left (its runs, the model ids in models/, the evaluation reports), for the
    # tests that check it whichever of the others (which add runs and retrain) ran before them.
    client = MlflowClient(store_uri(root))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, EXPERIMENT
    for model in ("logistic", "mlp"):
        shutil.copytree(Layout(root).eval_dir(model), root / FIRST_REPRO / model)
    (root / FIRST_REPRO / "runs.json").write_text(
        json.dumps(
            {
                "runs": [run.info.run_id for run in client.search_runs([experiment.experiment_id])],
                "model_ids": {model: read_model_id(Layout(root).model_dir(model)) for model in ("logistic", "mlp")},
            }
        )
    )
    return root


@pytest.fixture
def client(repo):
    mlflow.set_tracking_uri(store_uri(repo))
    yield MlflowClient()
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: back to the default; MLflow's annotation omits it


def runs(client, model=None):
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, EXPERIMENT
    query = f"tags.model = '{model}'" if model else ""
    return client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time ASC"])


def test_first_repro_runs_every_stage_in_order(repo):
    ran = stages_run((repo / "first_repro.log").read_text())
    assert ran[:3] == ["check_params", "download", "preprocess"]
    assert sorted(ran[3:-1]) == ["evaluate@logistic", "evaluate@mlp", "train@logistic", "train@mlp"]
    assert ran.index("train@mlp") < ran.index("evaluate@mlp") and ran[-1] == "summarize"


def test_every_stage_declares_exactly_the_project_code_it_runs(repo):
    """dvc.yaml's promise: a change to any project file a stage runs re-runs it, and a change to
    any other leaves it alone. What each stage ran comes from Python's own import log."""
    ran: dict[str, set[str]] = {}
    stage: set[str] | None = None
    for line in (repo / "first_repro.log").read_text().splitlines():
        if started := re.match(r"Running stage '([^']+)'", line):
            stage = ran.setdefault(started.group(1), {"src/mnist_pipeline/stages/__main__.py"})  # what `python -m` runs
        elif stage is not None and (module := re.search(r"\| +(mnist_pipeline(?:\.\w+)*)$", line)):
            path = Path("src", *module.group(1).split("."))
            stage.add(str(path / "__init__.py" if (REPO / path).is_dir() else path.with_suffix(".py")))
    locked = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(ran) == set(locked)
    for name, files in ran.items():
        declared = code_deps(repo, [dep["path"] for dep in locked[name]["deps"]])
        assert declared == files, (
            f"{name}: runs but does not declare {sorted(files - declared)}; "
            f"declares but does not run {sorted(declared - files)}"
        )


def test_metrics_and_reports_exist_and_dvc_reads_them(repo):
    for model in ("logistic", "mlp"):
        scores = json.loads((Layout(repo).eval_dir(model) / "metrics.json").read_text())[model]
        assert 0.1 < scores["accuracy"] <= 1 and list(scores) == ["accuracy", "log_loss", "precision", "recall", "f1"]
        classes = (Layout(repo).eval_dir(model) / "per_class.csv").read_text().splitlines()
        assert classes[0] == "digit,precision,recall,f1,support" and len(classes) == 11
        for picture in ("confusion_matrix.png", "misclassified.png"):
            assert (Layout(repo).eval_dir(model) / picture).stat().st_size > 1000
        history = Layout(repo).history(model).read_text().splitlines()
        assert history[0].split(",")[0] == "epoch" and len(history) == 2
    # One metrics file, every model's accuracy and log loss side by side; nothing else is a metric.
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout)[""]["data"]
    assert list(shown) == ["reports/metrics.json"]
    table = shown["reports/metrics.json"]["data"]
    for model in ("logistic", "mlp"):
        on_disk = json.loads((Layout(repo).eval_dir(model) / "metrics.json").read_text())[model]
        assert {name: table[name][model] for name in ("accuracy", "log_loss")} == {
            name: on_disk[name] for name in ("accuracy", "log_loss")
        }
    assert list(table) == ["accuracy", "log_loss"]
    assert json.loads((Layout(repo).data_reports / "summary.json").read_text())["images"] == {
        "train": 400,
        "validation": 100,
        "test": 10000,
    }


def test_mlflow_holds_one_complete_run_per_model(repo, client):
    first = json.loads((repo / FIRST_REPRO / "runs.json").read_text())
    all_runs = [client.get_run(run_id) for run_id in first["runs"]]
    assert sorted(r.data.tags["model"] for r in all_runs) == ["logistic", "mlp"]
    commit = sh(repo, "git", "rev-parse", "HEAD").stdout.strip()
    for run in all_runs:
        model = run.data.tags["model"]
        assert run.info.status == "FINISHED"
        assert run.info.run_name.startswith(f"{model}-")
        assert run.data.params["epochs"] == "1" and run.data.params["data.validation_size"] == "100"
        assert run.data.tags["git.commit"] == commit and run.data.tags["git.dirty"] == "false"
        assert run.data.tags["dvc.stage"] == f"train@{model}"
        assert run.data.tags["dvc.eval_stage"] == f"evaluate@{model}"
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in history] == [1]
        metrics = run.data.metrics
        on_disk = json.loads((repo / FIRST_REPRO / model / "metrics.json").read_text())[model]
        assert metrics["test_accuracy"] == on_disk["accuracy"] and metrics["test_macro_f1"] == on_disk["f1"]
        digit_3 = (repo / FIRST_REPRO / model / "per_class.csv").read_text().splitlines()[4].split(",")
        assert digit_3[0] == "3" and metrics["precision_3"] == float(digit_3[1])
        assert {"recall_9", "test_log_loss", "fit_seconds"} <= set(metrics)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
        assert {
            "evaluation/confusion_matrix.png",
            "evaluation/misclassified.png",
            "evaluation/per_class.csv",
            "evaluation/classification_report.txt",
        } <= artifacts
        contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
        assert contexts == {"training", "validation", "test"}
        logged = client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        assert len(logged) == 1 and logged[0].name == model  # the Models tab lists it by its key
        model_id = logged[0].model_id
        assert first["model_ids"][model] == model_id
        model_info = mlflow.models.get_model_info(f"models:/{model_id}")
        # Outputs only: the served model takes (N, 28, 28), (N, 784) and image files alike, which one input
        # schema cannot say; it answers a row per input.
        assert model_info.signature.inputs is None
        assert [c["name"] for c in model_info.signature.outputs.to_dict()] == [
            "digit",
            "probability",
            "unsure",
            "probabilities",
        ]
        # The served model's preprocessing and thresholds travel with it.
        shipped = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_id}"))
        assert (shipped / "unsure.json").is_file() and (shipped / "code" / "photo.py").is_file()
        assert model_info.saved_input_example_info is not None
        assert mlflow.models.get_model_info(f"runs:/{run.info.run_id}/{model}").model_uuid == model_info.model_uuid
        # The headline test metrics belong to the logged model too, measured on the run's test set.
        test_set = next(i.dataset for i in run.inputs.dataset_inputs if i.tags[0].value == "test")
        on_model = {m.key: m for m in logged[0].metrics if m.dataset_name is not None}
        assert {"test_accuracy", "test_log_loss", "test_macro_f1"} <= set(on_model) and "precision_3" not in on_model
        assert on_model["test_accuracy"].value == metrics["test_accuracy"]
        assert {(m.dataset_name, m.dataset_digest) for m in on_model.values()} == {(test_set.name, test_set.digest)}
        [version] = client.search_model_versions(f"name = 'mnist-{model}' AND run_id = '{run.info.run_id}'")
        assert int(version.version) == 1 and version.source == f"models:/{model_id}"  # the first of its family
        # The champion: the best of the model's runs (the others' tests may have added some since).
        best = max(r.data.metrics["test_accuracy"] for r in runs(client, model))
        assert champion_history(client, model)[0] == best
    assert "has no artifacts at artifact path" not in (repo / "first_repro.log").read_text()


def champion_history(client, model):
    """(accuracy of the champion, number of registered versions) of a model family."""
    name = f"mnist-{model}"
    champion = client.get_model_version_by_alias(name, "champion")
    return client.get_run(champion.run_id).data.metrics["test_accuracy"], len(
        client.search_model_versions(f"name='{name}'")
    )


def run_scores(run) -> Scores:
    """A run's test scores as the registry's gates take them."""
    metrics = run.data.metrics
    per_digit = [tuple(metrics[f"{score}_{d}"] for d in range(10)) for score in ("precision", "recall")]
    return Scores(metrics["test_accuracy"], *per_digit)


def test_a_second_repro_runs_nothing(repo, client):
    before = len(runs(client))
    again = sh(repo, "dvc", "repro")
    assert stages_run(again.stdout) == []
    assert len(runs(client)) == before


def test_changing_an_mlp_param_reruns_only_mlp(repo, client):
    mlp_before, logistic_before = len(runs(client, "mlp")), len(runs(client, "logistic"))
    champion_before, versions_before = champion_history(client, "mlp")
    champion_run = client.get_run(client.get_model_version_by_alias("mnist-mlp", "champion").run_id)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["mlp"]["dropout"] = 0.1
    write_params(repo, params)
    status = json.loads(sh(repo, "dvc", "status", "--json").stdout)
    # Of the data and model stages, only mlp's; check_params re-runs for any edit of params.yaml,
    # summarize for any new model result (each in a second).
    assert sorted(status) == ["check_params", "evaluate@mlp", "summarize", "train@mlp"]
    ran = stages_run(sh(repo, "dvc", "repro").stdout)
    assert ran == ["check_params", "train@mlp", "evaluate@mlp", "summarize"]
    mlp_runs = runs(client, "mlp")
    assert len(mlp_runs) == mlp_before + 1 and len(runs(client, "logistic")) == logistic_before
    assert mlp_runs[-1].data.params["dropout"] == "0.1"
    # The new run takes the alias, as a new version, only if it passes the registry's gates against
    # the champion: a higher test accuracy, and no digit's precision or recall fallen past max_digit_drop.
    accuracy = mlp_runs[-1].data.metrics["test_accuracy"]
    passes = not judge(run_scores(mlp_runs[-1]), run_scores(champion_run), RegistryParams(**params["registry"]))
    assert champion_history(client, "mlp") == (accuracy if passes else champion_before, versions_before + passes)
    assert mlp_runs[-1].data.tags["git.dirty"] == "true"


def test_the_same_params_give_the_same_metrics(repo, client):
    versions_before = champion_history(client, "logistic")[1]
    before = (Layout(repo).eval_dir("logistic") / "metrics.json").read_bytes()
    ran = stages_run(sh(repo, "dvc", "repro", "--force", "--single-item", "train@logistic", "evaluate@logistic").stdout)
    assert ran == ["train@logistic", "evaluate@logistic"]
    assert (Layout(repo).eval_dir("logistic") / "metrics.json").read_bytes() == before
    # A tie is no improvement: the champion stays, no version is added.
    assert champion_history(client, "logistic")[1] == versions_before
