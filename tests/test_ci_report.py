"""`ci-report` for real: a baseline committed in a throwaway git repo, one mlp parameter changed,
the command retrains only mlp and reports the change; the workflow around it passes actionlint."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO, make_repo, sh, small_params, stages_run, tracking_server, venv_bin, write_params
from mnist_pipeline.ci_report import dvc_diff, run_link
from mnist_pipeline.tracking import read_run_id, write_run_file

WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"


def metric_row(report: str, path: str, metric: str) -> list[str]:
    """The cells of `dvc metrics diff --md`'s row for one metric: path, metric, base, workspace, change."""
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:2] == [path, metric]:
            return cells
    raise AssertionError(f"no row for {path} {metric} in the report:\n{report}")


@pytest.mark.e2e
def test_ci_report_retrains_only_what_changed_and_reports_it(tmp_path, mnist_dir):
    repo = make_repo(tmp_path / "repo", small_params(mnist_dir, "ci"))
    sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "dvc.lock")
    sh(repo, "git", "commit", "-qm", "baseline results")
    base = sh(repo, "git", "rev-parse", "HEAD").stdout.strip()
    before = {m: json.loads((repo / f"reports/eval/{m}/metrics.json").read_text())["test"] for m in ("logistic", "mlp")}
    base_run = read_run_id(repo / "models/mlp")

    baseline_params = yaml.safe_load((repo / "params.yaml").read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["mlp"]["learning_rate"] = 0.01
    write_params(repo, params)
    done = sh(repo, "python", "-m", "mnist_pipeline", "ci-report", "--base", base, "--output", "out/report.md")
    assert stages_run(done.stderr) == ["check_params", "train@mlp", "evaluate@mlp"]  # DVC's own log
    report = (repo / "out/report.md").read_text()

    stage_rows = dict(re.findall(r"^\| `([^`]+)` \| ([^|]+) \|$", report, re.M))
    assert {s for s, outcome in stage_rows.items() if outcome == "ran"} == {"check_params", "train@mlp", "evaluate@mlp"}
    assert {s for s, outcome in stage_rows.items() if outcome == "up to date"} == {
        "download", "preprocess", "train@logistic", "evaluate@logistic"}
    assert "**Retrained:** mlp " in report
    old_rate = re.escape(str(baseline_params["models"]["mlp"]["learning_rate"]))
    assert re.search(rf"^\| params\.yaml +\| models\.mlp\.learning_rate +\| {old_rate} +\| 0\.01 +\|$", report, re.M)

    after = json.loads((repo / "reports/eval/mlp/metrics.json").read_text())["test"]
    assert after["accuracy"] != before["mlp"]["accuracy"]
    _, _, old, new, change = metric_row(report, "reports/eval/mlp/metrics.json", "test.accuracy")
    assert float(old) == pytest.approx(before["mlp"]["accuracy"], abs=1e-5)
    assert float(new) == pytest.approx(after["accuracy"], abs=1e-5)
    assert float(change) == pytest.approx(after["accuracy"] - before["mlp"]["accuracy"], abs=2e-5)
    assert "reports/eval/logistic/metrics.json" not in report  # unchanged metrics are not listed

    run_id = read_run_id(repo / "models/mlp")
    assert run_id != base_run and f"`{run_id}`" in report
    assert "### logistic" not in report
    recall_3 = f"{after['per_class']['3']['recall']:.4f}"
    assert re.search(rf"^\| 3 \| [0-9.]+ \| {recall_3} \|", report, re.M)
    image = re.search(r"!\[mlp confusion matrix\]\(([^)]+)\)", report).group(1)
    assert (repo / "out" / image).resolve() == (repo / "reports/eval/mlp/confusion_matrix.png").resolve()

    again = sh(repo, "python", "-m", "mnist_pipeline", "ci-report", "--base", base, "--no-embed-images")
    assert stages_run(again.stderr) == []
    assert "Nothing to retrain" in again.stdout and "### mlp" not in again.stdout
    assert "models.mlp.learning_rate" in again.stdout  # the workspace still differs from the base
    assert "could not read the base's metrics" not in again.stdout

    # Back to the baseline's params: DVC's run cache restores mlp's outputs instead of training.
    write_params(repo, baseline_params)
    back = sh(repo, "python", "-m", "mnist_pipeline", "ci-report", "--base", base)
    assert stages_run(back.stderr) == ["check_params"]
    assert "| `train@mlp` | restored from DVC's run cache |" in back.stdout
    assert "No parameter differs from the base." in back.stdout and "No metric differs from the base." in back.stdout

    # Without the DVC cache (and no remote) the base's metrics are unreadable, which the report notes.
    # (Not through a whole ci-report: its `dvc repro` would first retrain every model, cache gone.)
    shutil.move(repo / ".dvc/cache", tmp_path / "cache")
    table, unreadable = dvc_diff(repo, "metrics", base)
    assert unreadable and metric_row(table, "reports/eval/mlp/metrics.json", "test.accuracy")[2] == "-"


def test_ci_report_names_an_unknown_base_before_any_work(tmp_path, mnist_dir):
    repo = make_repo(tmp_path / "repo", small_params(mnist_dir, "ci"))
    done = sh(repo, "python", "-m", "mnist_pipeline", "ci-report", "--base", "no-such-branch", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: --base no-such-branch: no such commit")
    assert not (repo / "reports").exists()


def test_run_link_points_at_the_servers_ui_without_credentials(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    with tracking_server(tmp_path, f"sqlite:///{tmp_path / 'server.db'}", None, "--workers", "1") as url:
        client = MlflowClient(url)
        experiment_id = client.create_experiment("links")
        run_id = client.create_run(experiment_id).info.run_id
        write_run_file(tmp_path, run_id)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url.replace("http://", "http://ci:s3cret@") + "/")
        link = run_link(tmp_path, tmp_path)
    assert link == f"[`{run_id}`]({url}/#/experiments/{experiment_id}/runs/{run_id})"


def test_the_workflow_passes_actionlint():
    actionlint, shellcheck = (Path(venv_bin()) / name for name in ("actionlint", "shellcheck"))
    assert actionlint.exists() and shellcheck.exists(), "install the test extra: pip install -e '.[test]'"
    done = sh(REPO, str(actionlint), f"-shellcheck={shellcheck}", "-pyflakes=", str(WORKFLOW), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
