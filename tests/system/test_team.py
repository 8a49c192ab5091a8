"""Team scale, as docs/team.md sets it up: an MLflow server on PostgreSQL with artifacts proxied to
an S3-compatible bucket, and a DVC remote in the same bucket. The pipeline is the one a laptop
runs; only MLFLOW_TRACKING_URI and the DVC remote differ."""

import filecmp
import io
import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import psycopg
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.layout import Layout
from tests.support.harness import make_repo, repo_env, sh, small_params, stages_run
from tests.support.servers import S3_CREDENTIALS, boto3_credentials, mlflow_server, postgres, s3_endpoint

pytestmark = pytest.mark.e2e
EXPERIMENT = "team"
BUCKET = "team"


@dataclass(frozen=True)
class Team:
    tracking_url: str
    backend_uri: str
    s3_url: str


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Iterator[Team]:
    """PostgreSQL, the S3 endpoint and the MLflow server in front of both; stopped after the module."""
    logs = tmp_path_factory.mktemp("team-servers")
    with ExitStack() as servers:
        backend = servers.enter_context(postgres())
        s3 = servers.enter_context(s3_endpoint(logs, BUCKET))
        url = servers.enter_context(mlflow_server(logs, backend, f"s3://{BUCKET}/mlflow", s3))
        yield Team(url, backend, s3)


def client_env(repo: Path, team: Team) -> dict[str, str]:
    """What a pipeline client gets: the server's URL and nothing else (no S3 endpoint, no keys)."""
    env = {k: v for k, v in repo_env(repo).items() if not k.startswith("AWS_")}
    return env | {"MLFLOW_TRACKING_URI": team.tracking_url}


def remote_env(repo: Path) -> dict[str, str]:
    """What `dvc push` and `dvc pull` get: the bucket's keys."""
    return repo_env(repo) | S3_CREDENTIALS


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mnist_dir, team) -> Path:
    """The pipeline run once against the team server, its results committed and pushed to the remote."""
    params = small_params(EXPERIMENT)
    del params["models"]["logistic"]  # one model is enough to prove the wiring, and saves two stages
    root = make_repo(tmp_path_factory.mktemp("team") / "repo", params, mnist_dir)
    sh(root, "dvc", "remote", "add", "-d", "team", f"s3://{BUCKET}/dvc")
    sh(root, "dvc", "remote", "modify", "team", "endpointurl", team.s3_url)
    sh(root, "dvc", "repro", env=client_env(root, team))
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "results, and the team remote")
    sh(root, "dvc", "push", env=remote_env(root))
    return root


@pytest.fixture
def client(team) -> MlflowClient:
    return MlflowClient(team.tracking_url)


def finished_runs(client: MlflowClient, query: str = "") -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, EXPERIMENT
    return client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time ASC"])


def clone(repo: Path, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(repo), str(dest)], check=True)
    sh(dest, "dvc", "pull", env=remote_env(dest))
    return dest


def test_the_pipeline_logs_runs_metrics_and_artifacts_to_the_team_server(repo, team, client):
    runs = finished_runs(client)
    assert [r.data.tags["model"] for r in runs] == ["mlp"]
    for run in runs:
        model = run.data.tags["model"]
        on_disk = json.loads((Layout(repo).eval_dir(model) / "metrics.json").read_text())[model]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["test_accuracy"] == on_disk["accuracy"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1]
        # Proxied: the client writes through the server, never to the bucket itself.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        assert {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")} >= {
            "evaluation/metrics.json",
            "evaluation/confusion_matrix.png",
        }
        assert client.get_model_version_by_alias(f"mnist-{model}", "champion").run_id == run.info.run_id
    # The records are in PostgreSQL and the files in the bucket; nothing fell back to a local store.
    with psycopg.connect(team.backend_uri) as db:
        stored = {row[0] for row in db.execute("SELECT run_uuid FROM runs")}
    assert stored == {r.info.run_id for r in runs}
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=team.s3_url, **boto3_credentials()).list_objects_v2(
            Bucket=BUCKET, Prefix="mlflow/"
        )["Contents"]
    ]
    assert any(k.endswith("evaluation/confusion_matrix.png") for k in keys)
    assert any(k.endswith(".keras") for k in keys)
    assert not {"mlflow.db", "mlruns", "mlartifacts"} & {p.name for p in repo.iterdir()}


def test_the_champion_downloaded_through_the_server_predicts_as_evaluated(repo, team, tmp_path):
    np.save(tmp_path / "digits.npy", np.load(Layout(repo).processed / "test.npz")["x"][:20])
    served = sh(
        repo,
        "python",
        "-m",
        "mnist_pipeline",
        "predict",
        str(tmp_path / "digits.npy"),
        "--model",
        "models:/mnist-mlp@champion",
        env=client_env(repo, team),
    ).stdout
    digits = [int(line.split()[-3]) for line in served.splitlines()[1:]]  # input, digit, probability, unsure
    evaluated = pd.read_csv(Layout(repo).eval_dir("mlp") / "predictions.csv")["predicted"][:20]
    assert digits == evaluated.tolist()


def test_dvc_pull_in_a_fresh_clone_restores_data_and_models_and_repro_runs_nothing(repo, team, tmp_path):
    fresh = clone(repo, tmp_path / "fresh")
    for folder in ("data", "models", "reports"):
        left, right = repo / folder, fresh / folder
        files = sorted(p.relative_to(left) for p in left.rglob("*") if p.is_file())
        assert files and sorted(p.relative_to(right) for p in right.rglob("*") if p.is_file()) == files
        _match, mismatch, errors = filecmp.cmpfiles(left, right, [str(f) for f in files], shallow=False)
        assert (mismatch, errors) == ([], [])
    assert stages_run(sh(fresh, "dvc", "repro", env=client_env(fresh, team)).stdout) == []


def test_two_workers_in_separate_clones_share_the_server(repo, team, client, tmp_path):
    # Not the baseline's rate: DVC's run cache would restore that one, training nothing.
    baseline = yaml.safe_load((repo / "params.yaml").read_text())["models"]["mlp"]["learning_rate"]
    rates = {"a": round(baseline * 1.5, 6), "b": round(baseline * 2.5, 6)}
    workers = {name: clone(repo, tmp_path / f"worker-{name}") for name in rates}
    # Both machines at once, against the one server: one through DVC's queue, one in its workspace.
    sh(workers["a"], "dvc", "exp", "run", "--queue", "-S", f"models.mlp.learning_rate={rates['a']}")
    commands = {
        "a": ["dvc", "exp", "run", "--run-all"],
        "b": ["dvc", "exp", "run", "-S", f"models.mlp.learning_rate={rates['b']}"],
    }
    running = [
        subprocess.Popen(
            commands[name], cwd=w, env=client_env(w, team), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for name, w in workers.items()
    ]
    for process in running:
        output = process.communicate(timeout=600)[0]
        assert process.returncode == 0, output
    names = {name: sh(w, "dvc", "exp", "ls", "--name-only").stdout.split() for name, w in workers.items()}
    assert [len(n) for n in names.values()] == [1, 1]
    swept = finished_runs(client, "tags.`dvc.exp_name` != ''")
    assert sorted(r.data.tags["dvc.exp_name"] for r in swept) == sorted(n for listed in names.values() for n in listed)
    assert sorted(float(r.data.params["learning_rate"]) for r in swept) == sorted(rates.values())
    assert all(
        r.info.status == "FINISHED" and r.data.tags["model"] == "mlp" and "test_accuracy" in r.data.metrics
        for r in swept
    )
    # Either machine's leaderboard ranks every run: the baseline and both workers'.
    board = sh(
        workers["b"], "python", "-m", "mnist_pipeline", "compare", "--format", "csv", env=client_env(workers["b"], team)
    ).stdout
    assert set(pd.read_csv(io.StringIO(board))["run_id"]) == {r.info.run_id for r in finished_runs(client)}
