"""DVC's run cache shared through a real DVC remote (a local folder): a teammate trains a parameter
change with `dvc exp run` and pushes it with `push-run-cache`; a clean clone's `ci-report --pull` for
that change restores the model instead of training it, and says so. The models are DVC artifacts
that `dvc artifacts get` downloads. (Issue 23.)"""

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.tracking.run_file import file_sha256, read_model_sha256, read_run_id
from mnist_pipeline.training.cost import COST_FILE, KEYS
from tests.support.harness import sh, small_params, stages_run, store_uri, write_params
from tests.system.test_ci_report import Report, rows


def cost(repo) -> dict[str, float]:
    return json.loads((Layout(repo).model_dir("mlp") / COST_FILE).read_text())


def headline(repo, model):
    return json.loads((Layout(repo).eval_dir(model) / "metrics.json").read_text())[model]


@pytest.mark.e2e
def test_a_change_a_teammate_trained_and_pushed_is_restored_in_a_clean_clone(tmp_path, own_trained_repo):
    origin, remote = tmp_path / "origin.git", tmp_path / "dvc-remote"
    sh(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    teammate = own_trained_repo  # the small pipeline trained, its baseline committed
    sh(teammate, "dvc", "remote", "add", "-d", "team", str(remote))
    sh(teammate, "git", "add", "-A")
    sh(teammate, "git", "commit", "-qm", "baseline results, the team's DVC remote")
    sh(teammate, "python", "-m", "mnist_pipeline", "push-run-cache")
    sh(teammate, "git", "remote", "add", "origin", str(origin))
    sh(teammate, "git", "push", "-q", "origin", "main")
    baseline_sha = file_sha256(Layout(teammate).model_file("mlp"))
    baseline_cost = cost(teammate)

    # The teammate tries a learning rate and shares the run, not a commit.
    sh(teammate, "dvc", "exp", "run", "-S", "models.mlp.learning_rate=0.01")
    pushed = sh(teammate, "python", "-m", "mnist_pipeline", "push-run-cache").stdout
    assert "the DVC remote holds the run cache of" in pushed and "not pushed" not in pushed, pushed
    trained, trained_run = headline(teammate, "mlp"), read_run_id(Layout(teammate).model_dir("mlp"))
    trained_cost = cost(teammate)

    # A pull request with that change, checked out in a clean clone as CI does.
    clone = tmp_path / "ci"
    sh(tmp_path, "git", "clone", "-q", "-b", "main", str(origin), str(clone))
    sh(clone, "git", "checkout", "-qb", "faster-mlp")
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["models"]["mlp"]["learning_rate"] = 0.01
    write_params(clone, params)
    sh(clone, "git", "commit", "-qam", "mlp: learning rate 0.01")
    sh(clone, "dvc", "pull", "--run-cache", "--allow-missing")
    done = sh(
        clone, "python", "-m", "mnist_pipeline", "ci-report", "--base", "main", "--output", "out/report.md", "--pull"
    )

    # Nothing trained: the model and its history are the teammate's, restored; the evaluation (DVC
    # never run-caches it: its outputs are cache: false) runs again, in seconds, to the same scores.
    assert stages_run(done.stderr) == ["check_params", "evaluate@mlp"], done.stderr
    text = (clone / "out/report.md").read_text()
    report = Report.read(text)
    costs = text.split("### Training cost vs the base")[1].split("###")[0]
    assert report.summary == "**Restored from DVC's run cache, not trained again:** mlp."
    assert report.stages["train@mlp"] == report.stages["summarize"] == "restored from DVC's run cache"
    assert report.stages["evaluate@mlp"] == "ran"
    assert headline(clone, "mlp") == trained
    assert read_run_id(Layout(clone).model_dir("mlp")) == trained_run
    assert report.params == {
        "models.mlp.learning_rate": (str(small_params()["models"]["mlp"]["learning_rate"]), "0.01")
    }

    # The clone's store never saw the teammate's run: its evaluation is a run of its own, tied to the
    # training run by a tag, with the same test scores; nothing registered (the logged model is not here).
    client = MlflowClient(store_uri(clone))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].data.tags["training_run_id"] == trained_run
    assert runs[0].data.metrics["test_accuracy"] == pytest.approx(trained["accuracy"])
    assert client.search_model_versions() == []
    section = report.sections["### mlp (restored)"]
    assert (
        f"MLflow run (the run that trained it earlier): `{trained_run}`, trained against another tracking "
        f"store (not in this one); evaluated here in run `{runs[0].info.run_id}`." in section
    ), section
    assert [r[0] for r in rows(section)] == [str(digit) for digit in range(10)]
    # What training cost, the base's (main's model, from the DVC cache) against the restored one's.
    assert rows(costs) == [["mlp", *(f"{baseline_cost[key]:,.1f} → {trained_cost[key]:,.1f}" for key in KEYS)]], costs
    assert "training run" in done.stderr and "is not in" in done.stderr  # the stage's own warning

    # The models are DVC artifacts: a version registered (a Git tag, mlp@v0.0.1) names main's MLP, and
    # `dvc artifacts get` downloads it from the DVC remote, with no clone and no DVC cache.
    sh(teammate, "gto", "register", "mlp", "main")
    sh(teammate, "git", "push", "-q", "origin", "mlp@v0.0.1")
    sh(tmp_path, "dvc", "artifacts", "get", str(origin), "mlp", "-o", str(tmp_path / "got"))
    got = tmp_path / "got"
    assert file_sha256(got / "model.keras") == baseline_sha == read_model_sha256(got)
