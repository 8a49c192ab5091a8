"""Bad input, faults and concurrency, each with real processes, files and tracking stores.
docs/reliability.md lists what each test proves."""

import copy
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import mlflow
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.layout import Layout
from tests.support.harness import (
    TRAINED_EXPERIMENT,
    free_port,
    repo_env,
    sh,
    stages_run,
    store_uri,
    tracking_server,
    write_params,
)
from tests.support.template import trained_copy

pytestmark = pytest.mark.e2e
EXPERIMENT = TRAINED_EXPERIMENT


@pytest.fixture(scope="module")
def repo(tmp_path_factory, trained_template):
    """The small pipeline trained, as the template holds it (tests/support/template.py)."""
    root = trained_copy(trained_template, tmp_path_factory.mktemp("reliability") / "repo")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "first results")
    return root


@pytest.fixture
def params(repo):
    """The committed params, to edit; restored after the test."""
    original = (repo / "params.yaml").read_text()
    yield yaml.safe_load(original)
    (repo / "params.yaml").write_text(original)


def client_for(uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def runs(repo, query: str = "") -> list:
    client = client_for(store_uri(repo))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, EXPERIMENT
    return client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time ASC"])


def snapshot(repo) -> dict[str, tuple[str, int]]:
    """Content hash and modification time of every output file."""
    files = {}
    for top in ("data", "models", "reports"):
        for path in sorted((repo / top).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(repo))] = (
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                    path.stat().st_mtime_ns,
                )
    return files


def stage(repo, *args, env=None, **popen) -> subprocess.CompletedProcess:
    return sh(repo, sys.executable, "-m", "mnist_pipeline", *args, check=False, env=env or repo_env(repo), **popen)


@contextmanager
def read_only(folder: Path):
    """A folder nobody can write to, root included (root ignores permission bits)."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available to make a folder read-only for root")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


# --- 1. bad params -----------------------------------------------------------------------
BAD_PARAMS = [
    (lambda p: p["models"]["mlp"].update(dropuot=0.2), "unknown key 'models.mlp.dropuot'"),
    (lambda p: p["models"]["mlp"].update(epochs="ten"), "models.mlp.epochs = 'ten': Input should be a valid integer"),
    (lambda p: p["models"]["mlp"].update(epochs=0), "models.mlp.epochs = 0"),
    (lambda p: p["models"]["logistic"].update(batch_size=-1), "models.logistic.batch_size = -1"),
    (lambda p: p["models"]["mlp"].update(learning_rate=0), "models.mlp.learning_rate = 0"),
    (lambda p: p["models"]["mlp"].update(dropout=1.0), "models.mlp.dropout = 1.0: Input should be less than 1"),
    (lambda p: p["models"]["mlp"].update(hidden_units=[]), "models.mlp.hidden_units = []"),
    (lambda p: p["models"]["mlp"].update(optimizer="adom"), "models.mlp.optimizer = 'adom'"),
    (lambda p: p["models"]["mlp"].update(activation="relux"), "models.mlp.activation = 'relux'"),
    (lambda p: p["models"]["logistic"].update(type="svm"), "models.logistic.type = 'svm' is not allowed"),
    (lambda p: p.pop("data"), "missing key 'data'"),
    # Hostile input (issue 15). DVC puts a model's name into the stage's shell command: refused
    # before any stage but check_params runs (nothing creates X).
    (
        lambda p: p["models"].update({"$(touch X)": copy.deepcopy(p["models"]["mlp"]) | {"hidden_units": [32]}}),
        "models: name '$(touch X)' is not allowed; use a letter, then letters, digits, _ or -",
    ),
    # One object twice: yaml.safe_dump writes it as an anchor and an alias, which DVC reads.
    (
        lambda p: p["models"].update(copy=p["models"]["mlp"]),
        "line 2: YAML anchors and aliases (&name, *name) are not allowed; write the value out in full",
    ),
    # preprocess would find this only after DVC had deleted data/processed.
    (
        lambda p: p["data"].update(train_size=60_000),
        "data.validation_size + data.train_size = 60,100: more than the 60,000 MNIST training images",
    ),
    (
        lambda p: p["models"]["mlp"].update(hidden_units=[100_000, 100_000]),
        "models.mlp.hidden_units.0 = 100000: Input should be less than or equal to 16384",
    ),
]


@pytest.mark.parametrize(("change", "expected"), BAD_PARAMS, ids=[e for _, e in BAD_PARAMS])
def test_bad_params_stop_dvc_repro_before_anything_changes(repo, params, change, expected):
    before, runs_before, top = snapshot(repo), len(runs(repo)), sorted(os.listdir(repo))
    change(params)
    write_params(repo, params)
    done = sh(repo, "dvc", "repro", check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert stages_run(output) == ["check_params"]
    assert f"error: params.yaml: {expected}" in output
    assert "check-params, exited with 2" in output
    assert snapshot(repo) == before and sorted(os.listdir(repo)) == top
    assert len(runs(repo)) == runs_before


def test_malformed_yaml_stops_dvc_before_any_stage(repo):
    before = snapshot(repo)
    original = (repo / "params.yaml").read_text()
    try:
        (repo / "params.yaml").write_text(original.replace("models:", "models: [", 1))
        done = sh(repo, "dvc", "repro", check=False)
        assert done.returncode != 0 and stages_run(done.stdout) == []
        assert "params.yaml" in done.stderr
        cli = stage(repo, "check-params")
        assert cli.returncode == 2 and "params.yaml: not valid YAML at line" in cli.stderr
    finally:
        (repo / "params.yaml").write_text(original)
    assert snapshot(repo) == before


# --- 3. interrupted training ----------------------------------------------------------------
def wait_for_first_epoch(repo, timeout_s=180):
    """The id of the mlp run once it is RUNNING and has logged one epoch."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = runs(repo, "tags.model = 'mlp' and attributes.status = 'RUNNING'")
        if running and MlflowClient().get_metric_history(running[0].info.run_id, "val_loss"):
            return running[0].info.run_id
        time.sleep(0.5)
    raise AssertionError("training never reached its first epoch")


def locked(repo, stage_name: str) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage_name]


@pytest.mark.parametrize(("how", "next_epochs"), [("SIGTERM to the stage", 2), ("Ctrl-C to dvc", 3)])
def test_interrupted_training_ends_its_run_leaves_no_output_and_reruns_cleanly(repo, params, how, next_epochs):
    params["models"]["mlp"] |= {"epochs": 1000, "early_stopping_patience": 0}
    write_params(repo, params)
    lock = locked(repo, "train@mlp")
    dvc = subprocess.Popen(
        ["dvc", "repro", "train@mlp"],
        cwd=repo,
        env=repo_env(repo),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        run_id = wait_for_first_epoch(repo)
        if how == "SIGTERM to the stage":
            trainer = next(p for p in psutil.Process(dvc.pid).children(recursive=True) if "train" in p.cmdline())
            trainer.send_signal(signal.SIGTERM)
        else:
            os.killpg(dvc.pid, signal.SIGINT)
        output, _ = dvc.communicate(timeout=120)
    finally:
        if dvc.poll() is None:
            os.killpg(dvc.pid, signal.SIGKILL)
    assert dvc.returncode != 0, output
    assert "error: interrupted by" in output, output  # the whole log: a crash would show its stack
    assert MlflowClient().get_run(run_id).info.status == "KILLED"
    assert not Layout(repo).model_dir("mlp").exists()
    assert not Layout(repo).history("mlp").exists()
    assert [p.name for p in (repo / "models").iterdir()] == ["logistic"]  # no temp folder left
    assert locked(repo, "train@mlp") == lock  # DVC recorded nothing for the interrupted stage

    # Settings never trained before, so DVC's run cache cannot stand in for the rerun.
    params["models"]["mlp"] |= {"epochs": next_epochs, "early_stopping_patience": 3}
    write_params(repo, params)
    ran = stages_run(sh(repo, "dvc", "repro").stdout)
    assert ran == ["check_params", "train@mlp", "evaluate@mlp", "summarize"]
    last = runs(repo, "tags.model = 'mlp'")[-1]
    assert last.info.status == "FINISHED" and last.data.params["epochs"] == str(next_epochs)
    assert json_status(repo) == {}


def json_status(repo) -> dict:
    return yaml.safe_load(sh(repo, "dvc", "status", "--json").stdout)


# --- 4. tracking store unreachable or unwritable ------------------------------------------------
def test_an_unreachable_tracking_server_fails_before_training(repo):
    before = snapshot(repo)
    uri = f"http://127.0.0.1:{free_port()}"
    done = stage(repo, "train", "mlp", env=repo_env(repo, MLFLOW_TRACKING_URI=uri))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: cannot use the MLflow tracking store {uri}: ")
    assert "fix: start the server or correct MLFLOW_TRACKING_URI" in lines[-1]
    assert "Epoch 1" not in done.stdout + done.stderr
    assert snapshot(repo) == before


def test_a_sqlite_store_in_a_read_only_folder_fails_before_training(repo, tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    uri = store_uri(folder)
    with read_only(folder):
        done = stage(repo, "train", "mlp", env=repo_env(repo, MLFLOW_TRACKING_URI=uri))
    assert done.returncode == 1
    assert f"error: cannot write the MLflow store {folder / 'mlflow.db'}: folder {folder} is read-only" in done.stderr
    assert list(folder.iterdir()) == []


# --- 7. disk and permissions ---------------------------------------------------------------------
def test_a_read_only_output_folder_fails_before_training_and_starts_no_run(repo):
    before, runs_before = snapshot(repo), len(runs(repo))
    with read_only(repo / "models"):
        done = stage(repo, "train", "logistic")
    assert done.returncode == 1
    assert "error: cannot write" in done.stderr and "fix permissions" in done.stderr
    assert "Epoch 1" not in done.stdout + done.stderr
    assert snapshot(repo) == before and len(runs(repo)) == runs_before


def limit_file_size(max_bytes: int):
    def apply():  # in the child, before exec: writes past the limit fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def test_a_full_disk_leaves_the_previous_output_whole(repo):
    before = snapshot(repo)
    done = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline", "preprocess"],
        cwd=repo,
        env=repo_env(repo),
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size(1 << 20),
    )
    assert done.returncode == 1
    assert "error: cannot write" in done.stderr and "File too large" in done.stderr
    assert snapshot(repo) == before
    assert sorted(p.name for p in (repo / "data").iterdir()) == ["processed", "raw"]  # no temp folder left


# --- 5. concurrency ------------------------------------------------------------------------------
def four_workers(repo, tmp_path, env_extra: dict) -> list[subprocess.CompletedProcess]:
    """Four train processes at once, each in its own copy of the project (as DVC queue workers are)."""
    procs = []
    for seed in range(4):
        worker = tmp_path / f"worker{seed}"
        shutil.copytree(Layout(repo).processed, Layout(worker).processed)
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["models"]["mlp"] |= {"seed": seed, "epochs": 3, "early_stopping_patience": 0}
        write_params(worker, params)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "mnist_pipeline", "train", "mlp"],
                cwd=worker,
                env=repo_env(repo, **env_extra),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in procs]


def assert_all_four_complete(results, client: MlflowClient):
    for done in results:
        assert done.returncode == 0, done.stderr[-2000:]
        assert "database is locked" not in done.stderr
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, EXPERIMENT
    found = client.search_runs([experiment.experiment_id])
    assert sorted(int(r.data.params["seed"]) for r in found) == [0, 1, 2, 3]
    for run in found:
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2, 3]
        assert {"fit_seconds", "best_val_accuracy"} <= set(run.data.metrics)


def test_four_workers_log_into_one_new_sqlite_store(repo, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    # As under `dvc queue`: DVC_ROOT names the main repository, whose mlflow.db every worker uses.
    results = four_workers(repo, tmp_path, {"DVC_ROOT": str(shared)})
    assert_all_four_complete(results, client_for(store_uri(shared)))


def test_four_workers_log_through_one_mlflow_server(repo, tmp_path):
    with tracking_server(tmp_path, f"sqlite:///{tmp_path / 'server.db'}?timeout=60") as uri:
        results = four_workers(repo, tmp_path, {"MLFLOW_TRACKING_URI": uri})
        assert_all_four_complete(results, client_for(uri))
