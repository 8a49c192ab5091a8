"""`tune`: an Optuna study whose trials are training runs. Real Optuna (SQLite and PostgreSQL
storages), a real MLflow SQLite store, real Keras on tiny made-up digits, real dvc; the data folders
hold the train and validation splits only, so every trial here runs without test.npz.

The fast parts first (the search space's checks, the values a trial draws, the lines it prints, the
params.yaml edit, the study's refusals): no TensorFlow in them. The tests that train are marked slow."""

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from mnist_pipeline.core.params import MLPParams, load_params
from mnist_pipeline.data.splits import save_splits
from mnist_pipeline.tuning import optuna_study
from mnist_pipeline.tuning.schema import search_for
from tests.support.harness import REPO, make_repo, repo_env, sh, small_params
from tests.support.servers import postgres
from tests.support.tiny import digits
from tests.unit.test_tune import loaded, tiny_raw, tiny_repo


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables and no experiment, for tests to copy."""
    from mnist_pipeline.tracking.store import check_store

    folder = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        check_store(folder)
    return folder / "mlflow.db"


# --- trials that train -----------------------------------------------------------------------------
@pytest.mark.slow  # trains in TensorFlow (and starts PostgreSQL, or workers): seconds each
def test_a_hopeless_learning_rate_is_pruned_in_optuna_and_a_finished_tagged_run_in_mlflow(
    tmp_path, clean_env, capsys, empty_store
):
    """Two trials with a learning rate that learns, then one that cannot: the median pruner stops it
    after its first epoch, and the study and MLflow both say so."""
    from mnist_pipeline.core.layout import Layout
    from mnist_pipeline.tracking.store import tracking_uri, use_experiment
    from mnist_pipeline.tuning.trials import create_parent, tune

    raw = tiny_raw(
        trials=3,
        epochs=2,
        pruner="median",
        startup_trials=2,
        space={"learning_rate": {"low": 1e-7, "high": 0.03, "log": True}},
    )
    root = tiny_repo(tmp_path, raw, store=empty_store)
    params, tunes = loaded(root / "params.yaml")
    tuning, url = search_for(tunes, params, "mlp"), optuna_study.default_storage(root)
    storage = optuna_study.open_storage(url)
    experiment = use_experiment("tune", root)
    study, _ = optuna_study.open_study(
        storage,
        "mlp",
        tuning,
        optuna_study.definition("mlp", params, tuning),
        lambda: create_parent(MlflowClient(), experiment, "mlp", url, "mlp", params, tuning),
    )
    for learning_rate in (0.01, 0.02, 1e-7):  # Optuna's own way to fix a trial's values
        study.enqueue_trial({"learning_rate": learning_rate})

    tune("mlp", params, tuning, Layout(root), root / "params.yaml")

    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"trial 2  pruned \(at epoch 1\)  val_loss [\d.]+  learning_rate=0.0000001", lines[2]), lines
    trials = optuna.load_study(study_name="mlp", storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    client = MlflowClient(tracking_uri(root))
    runs = [client.get_run(t.user_attrs[optuna_study.RUN_ATTR]) for t in trials]
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    assert [r.data.tags["tune.state"] for r in runs] == ["complete", "complete", "pruned"]
    assert runs[2].data.tags["tune.pruned"] == "at epoch 1"
    assert len(client.get_metric_history(runs[2].info.run_id, "val_loss")) == 1  # stopped after epoch 1 of 2
    assert len(client.get_metric_history(runs[0].info.run_id, "val_loss")) == 2
    best = min(trials[:2], key=trial_value)
    assert [r.data.tags.get("tune.best") for r in runs] == ["true" if t is best else None for t in trials]
    parent = client.get_run(study.user_attrs[optuna_study.PARENT_ATTR])
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.tags["tune.best_trial"] == str(best.number)
    assert parent.data.metrics == {"best_val_loss": best.value, "trials_complete": 2, "trials_pruned": 1}
    assert parent.data.params["space.learning_rate"] == "1e-07..0.03 log"
    assert "optimization_history.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def as_in_a_terminal() -> None:
    """SIGINT and SIGTERM as a shell leaves them: a test run in the background of a script inherits them ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start_worker(root: Path, storage: str, study: str, log: Path) -> subprocess.Popen:
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "mnist_pipeline", "tune", "mlp", "--storage", storage, "--study", study],
            cwd=root,
            env=repo_env(REPO),
            stdout=out,
            stderr=err,
            preexec_fn=as_in_a_terminal,
        )


def wait(worker: subprocess.Popen, log: Path, timeout_s: float = 240) -> tuple[int, str, str]:
    try:
        code = worker.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError(
            f"worker still running after {timeout_s} s:\n{log.with_suffix('.err').read_text()}"
        ) from None
    return code, log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()


@pytest.fixture(scope="module")
def pg() -> Iterator[str]:
    with postgres("optuna") as url:
        yield url


def trial_value(trial: FrozenTrial) -> float:
    assert trial.value is not None, trial  # a complete trial has its value
    return trial.value


def worker_ran(out: str) -> int:
    """How many trials a worker says it ran."""
    said = re.search(r"this worker ran (\d+)", out)
    assert said, out
    return int(said[1])


def study_runs(root: Path, study: optuna.Study) -> tuple[list, list]:
    """The study's MLflow parent runs and child runs in `root`'s store."""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tune")
    assert experiment is not None, "tune"
    runs = client.search_runs([experiment.experiment_id], f"tags.`tune.study` = '{study.study_name}'")
    return (
        [r for r in runs if "mlflow.parentRunId" not in r.data.tags],
        [r for r in runs if "mlflow.parentRunId" in r.data.tags],
    )


@pytest.mark.slow  # trains in TensorFlow (and starts PostgreSQL, or workers): seconds each
def test_two_workers_on_one_postgresql_study_run_its_trials_once_each_under_one_parent(tmp_path, pg, empty_store):
    n = 6
    root = tiny_repo(tmp_path, tiny_raw(trials=n, epochs=2), store=empty_store)
    workers = [start_worker(root, pg, "duo", tmp_path / f"worker{i}") for i in range(2)]
    results = [wait(worker, tmp_path / f"worker{i}") for i, worker in enumerate(workers)]
    for code, out, err in results:
        assert code == 0, err
        assert "Traceback" not in err and "\x1b[" not in out + err
    study = optuna.load_study(study_name="duo", storage=pg)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n
    assert all(t.user_attrs.get(optuna_study.SURPLUS_ATTR) for t in study.trials if t not in finished)
    ran = [worker_ran(out) for _, out, _ in results]
    assert sum(ran) == n and all(ran), ran
    # One line per trial a worker ran, each trial printed by one worker only.
    printed = [int(m) for _, out, _ in results for m in re.findall(r"^trial (\d+)  ", out, re.MULTILINE)]
    assert sorted(printed) == sorted(t.number for t in finished)

    parents, children = study_runs(root, study)
    assert [p.info.run_id for p in parents] == [study.user_attrs[optuna_study.PARENT_ATTR]]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert sorted(int(c.data.tags["tune.trial"]) for c in children) == sorted(t.number for t in finished)
    assert {c.info.run_id for c in children} == {t.user_attrs[optuna_study.RUN_ATTR] for t in finished}
    assert all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["process.pid"] for c in children}) == 2  # both workers trained
    assert parents[0].info.status == "FINISHED"
    plots = {a.path for a in MlflowClient(f"sqlite:///{root / 'mlflow.db'}").list_artifacts(parents[0].info.run_id)}
    assert plots == {"optimization_history.png", "param_importances.png"}


@pytest.mark.slow  # trains in TensorFlow (and starts PostgreSQL, or workers): seconds each
def test_sigterm_to_one_worker_fails_its_trial_kills_its_run_and_the_other_finishes_the_study(
    tmp_path, pg, empty_store
):
    n = 2
    root = tiny_repo(tmp_path, tiny_raw(trials=n, epochs=25), train=200, store=empty_store)
    first, second = (start_worker(root, pg, "term", tmp_path / name) for name in ("first", "second"))
    client, deadline = MlflowClient(f"sqlite:///{root / 'mlflow.db'}"), time.monotonic() + 180
    training = None
    while training is None:  # the first worker's first trial is in its fit: epochs are being logged
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.err").read_text()
        time.sleep(0.3)
        experiment = client.get_experiment_by_name("tune")
        if experiment is None:
            continue
        runs = client.search_runs(
            [experiment.experiment_id],
            f"attributes.status = 'RUNNING' and tags.`process.pid` = '{first.pid}'",
        )
        training = next((r for r in runs if "val_loss" in r.data.metrics), None)
    first.send_signal(signal.SIGTERM)
    code, _, err = wait(first, tmp_path / "first")
    trial = int(training.data.tags["tune.trial"])
    assert code == 128 + signal.SIGTERM
    assert err.splitlines()[-1] == (
        f"error: interrupted by SIGTERM; trial {trial} of study 'term' is marked failed "
        f"and its MLflow run KILLED; the study's other workers carry on, and running "
        f"the command again continues it"
    )
    assert "Traceback" not in err
    study = optuna.load_study(study_name="term", storage=pg)
    assert study.trials[trial].state == TrialState.FAIL
    assert client.get_run(training.info.run_id).info.status == "KILLED"

    code, out, err = wait(second, tmp_path / "second")
    assert code == 0, err
    study = optuna.load_study(study_name="term", storage=pg)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n and f"{n} of {n} trials finished" in out
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    _, children = study_runs(root, study)
    assert sorted(c.info.status for c in children) == ["FINISHED"] * n + ["KILLED"]
    assert {c.data.tags["process.pid"] for c in children if c.info.status == "FINISHED"} == {str(second.pid)}


@pytest.mark.slow  # trains in TensorFlow (and starts PostgreSQL, or workers): seconds each
def test_apply_writes_the_best_values_and_dvc_status_shows_that_models_stages_changed(tmp_path, empty_store):
    """A real git + DVC repository whose train stages dvc.lock records; `tune --apply` then changes
    the tuned keys of models.mlp only: dvc sees mlp's stage changed, not logistic's, and the optuna.db
    the study left is ignored by git and unknown to DVC."""
    from ruamel.yaml import YAML

    root = make_repo(tmp_path / "repo", small_params("tune"))
    rt = YAML()
    rt.width = 4096
    params = rt.load((REPO / "params.yaml").read_text())  # the shipped file, comments and all, made tiny
    tiny = tiny_raw(trials=2, epochs=1)
    for section in ("data", "mlflow", "registry"):
        params[section].update(tiny[section])
    params["models"]["mlp"].update({k: v for k, v in tiny["models"]["mlp"].items() if k != "hidden_units"})
    with open(root / "params.yaml", "w") as file:
        rt.dump(params, file)
    (root / "tune.yaml").write_text(yaml.safe_dump({"tune": {"mlp": tiny["tune"]["mlp"]}}))
    save_splits({"train": digits(120, 1), "validation": digits(60, 2)}, root / "data" / "processed")
    for model in ("mlp", "logistic"):  # the train stages' outputs, recorded in dvc.lock as if they had run
        (root / "models" / model).mkdir(parents=True)
        (root / "models" / model / "model.keras").write_text(model)
        (root / "reports" / "history").mkdir(parents=True, exist_ok=True)
        (root / "reports" / "history" / f"{model}.csv").write_text("epoch\n1\n")
    shutil.copy(empty_store, root / "mlflow.db")
    sh(root, "dvc", "commit", "-f", "train@mlp", "train@logistic")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "tiny params, the train stages recorded")
    assert sh(root, "dvc", "status", "train@mlp", "train@logistic").stdout.strip() == (
        "Data and pipelines are up to date."
    )
    before = (root / "params.yaml").read_text().splitlines()

    done = sh(root, sys.executable, "-m", "mnist_pipeline", "tune", "mlp", "--apply")
    study = optuna.load_study(study_name="mlp", storage=optuna_study.default_storage(root))
    best = study.best_trial.user_attrs[optuna_study.VALUES_ATTR]
    after = (root / "params.yaml").read_text().splitlines()
    changed = [(b, a) for b, a in zip(before, after, strict=False) if b != a]
    assert len(before) == len(after) and [b.split(":")[0].strip() for b, _ in changed] == ["dropout", "learning_rate"]
    old_rate = changed[1][0].split(":")[1].split("#")[0].strip()
    assert changed[1][1].endswith(f"# was {old_rate} before tune --apply")  # its comment explained the old value
    mlp = load_params(root / "params.yaml").model("mlp")
    assert isinstance(mlp, MLPParams)
    assert (mlp.learning_rate, mlp.dropout) == (best["learning_rate"], best["dropout"])
    assert f"models.mlp.dropout 0.2 -> {optuna_study.text(best['dropout'])}" in done.stdout.splitlines()[-2]

    status = sh(root, "dvc", "status", "train@mlp", "train@logistic").stdout
    assert status.startswith("train@mlp:") and "train@logistic" not in status
    assert re.search(r"modified: +models.mlp$", status, re.MULTILINE)  # train@mlp declares models.mlp as one param
    diff = yaml.safe_load(sh(root, "dvc", "params", "diff", "--json").stdout)["params.yaml"]
    assert set(diff) == {"models.mlp.learning_rate", "models.mlp.dropout"}  # what DVC sees changed: no tune.*
    assert sh(root, "git", "status", "--porcelain").stdout.splitlines() == [" M params.yaml"]  # optuna.db is ignored
