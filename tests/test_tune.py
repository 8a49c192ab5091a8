"""`tune`: an Optuna study whose trials are training runs. Real Optuna (SQLite and PostgreSQL
storages), a real MLflow SQLite store, real Keras on tiny made-up digits, real dvc; the data folders
hold the train and validation splits only, so every trial here runs without test.npz.

The fast parts first (the search space's checks, the values a trial draws, the lines it prints, the
params.yaml edit, the study's refusals): no TensorFlow in them. The tests that train are marked slow."""

import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import REPO, make_repo, repo_env, sh, small_params
from mlflow.projects import load_project
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from servers import postgres
from tiny import clean_env, digits  # noqa: F401  (clean_env: a fixture)

from mnist_pipeline.core.errors import ParamsError, PipelineError
from mnist_pipeline.core.params import Params, load_params, parse_params
from mnist_pipeline.tuning.schema import TuneParams, checked_tuning, load_tuning, search_for
from mnist_pipeline.data.splits import save_splits
from mnist_pipeline.tuning import optuna_study
from mnist_pipeline.tuning.params_edit import apply_values

TUNED = ("learning_rate", "dropout")


def shipped() -> dict:
    """The shipped params.yaml, with tune.yaml's section beside its own."""
    return yaml.safe_load((REPO / "params.yaml").read_text()) | yaml.safe_load((REPO / "tune.yaml").read_text())


def parsed(raw: dict) -> tuple[Params, dict[str, TuneParams]]:
    """`raw` checked as params.yaml (all but the tune section) and tune.yaml (the tune section) are."""
    params = parse_params(yaml.safe_dump({k: v for k, v in raw.items() if k != "tune"}, sort_keys=False).encode(),
                          Path("params.yaml"))
    return params, checked_tuning(raw["tune"], params, "tune.yaml")


def loaded(path: Path) -> tuple[Params, dict[str, TuneParams]]:
    """params.yaml at `path` and the tune.yaml beside it, as the tune command reads them."""
    params = load_params(path)
    return params, load_tuning(path, params)


def write_split(root: Path, raw: dict) -> None:
    """`raw` as the files hold it: the tune section in tune.yaml, the rest in params.yaml."""
    (root / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in raw.items() if k != "tune"}, sort_keys=False))
    (root / "tune.yaml").write_text(yaml.safe_dump({"tune": raw["tune"]}, sort_keys=False))


def tiny_raw(experiment: str = "tune", trials: int = 3, epochs: int = 1, **tune) -> dict:
    """The shipped params with a tiny mlp and a tiny search over it."""
    raw = shipped()
    raw["models"]["mlp"] |= {"hidden_units": [16], "epochs": epochs, "batch_size": 20, "lr_schedule": "constant",
                             "learning_rate": 0.003, "early_stopping_patience": 0}
    raw["data"] |= {"validation_size": 60, "train_size": 120}
    raw["mlflow"]["experiment"] = experiment
    raw["registry"]["enabled"] = False
    raw["tune"]["mlp"] = {"trials": trials, "objective": "val_loss", "pruner": "none", "startup_trials": 2,
                          "warmup_epochs": 0, "seed": 7,
                          "space": {"learning_rate": {"low": 0.001, "high": 0.03, "log": True},
                                    "dropout": {"low": 0.0, "high": 0.3}}} | tune
    return raw


def tiny_repo(root: Path, raw: dict, train: int = 120, store: Path | None = None) -> Path:
    """`root` with params.yaml and data/processed as the preprocess stage leaves it, but no test.npz;
    with `store`, a copy of that empty MLflow store (creating its tables takes seconds)."""
    save_splits({"train": digits(train, 1), "validation": digits(60, 2)}, root / "data" / "processed")
    write_split(root, raw)
    if store:
        shutil.copy(store, root / "mlflow.db")
    return root


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables and no experiment, for tests to copy."""
    from mnist_pipeline.tracking.store import check_store

    folder = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        check_store(folder)
    return folder / "mlflow.db"


# --- the search space, checked with the rest of params.yaml ----------------------------------------
@pytest.mark.parametrize(("change", "expected"), [
    (lambda t: t["space"].update(dropuot={"low": 0.0, "high": 0.5}),
     "unknown key 'tune.mlp.space.dropuot'; did you mean 'dropout'?"),
    (lambda t: t["space"].update(dropout={"low": 0.0, "high": 1.0}),
     "tune.mlp.space.dropout.high = 1.0: Input should be less than 1 (as models.mlp.dropout)"),
    (lambda t: t["space"].update(dropout={"low": 0.4, "high": 0.1}),
     "tune.mlp.space.dropout = {'high': 0.1, 'low': 0.4}: low (0.4) must be below high (0.1)"),
    (lambda t: t["space"].update(learning_rate={"low": 0.0, "high": 0.1, "log": True}),
     "tune.mlp.space.learning_rate = {'high': 0.1, 'log': True, 'low': 0.0}: log: true needs low above 0 (low is 0)"),
    (lambda t: t["space"].update(hidden_units={"low": 16, "high": 512}),
     "tune.mlp.space.hidden_units: hidden_units is not a number, so it takes choices, not a range: e.g. "
     "{choices: [[512, 512]]}"),
    (lambda t: t["space"].update(hidden_units={"choices": [[256], [16384, 16384]]}),
     "tune.mlp.space.hidden_units.choices[1] = [16384, 16384]: 281,477,130 weights, more than the limit of "
     "50,000,000; use fewer or smaller layers"),
    (lambda t: t["space"].update(batch_size={"low": 32, "high": 100.5}),
     "tune.mlp.space.batch_size: batch_size takes whole numbers; give low, high (and step) without a fraction"),
    (lambda t: t["space"].update(optimizer={"choices": ["adam", "adom"]}),
     "tune.mlp.space.optimizer.choices[1] = 'adom': Input should be 'adam', 'adamw', 'sgd' or 'rmsprop' "
     "(as models.mlp.optimizer)"),
    (lambda t: t["space"].update(dropout=0.3),
     "tune.mlp.space.dropout = 0.3: give a range {low: ..., high: ...} or a list {choices: [...]}"),
    (lambda t: t.update(trails=30),
     "unknown key 'tune.mlp.trails'; allowed here: trials, objective, pruner, startup_trials, warmup_epochs, epochs, "
     "seed, space"),
    (lambda t: t.update(objective="test_accuracy"),
     "tune.mlp.objective = 'test_accuracy': Input should be 'val_loss' or 'val_accuracy'"),
    (lambda t: t.update(epochs=3) or t["space"].update(epochs={"low": 1, "high": 5}),
     "tune.mlp.epochs and tune.mlp.space.epochs: both set the trials' epochs; keep one"),
])
def test_a_bad_search_space_is_one_line_naming_the_file_and_the_key(tmp_path, change, expected):
    raw = shipped()
    change(raw["tune"]["mlp"])
    write_split(tmp_path, raw)
    load_params(tmp_path / "params.yaml")  # the stages do not read tune.yaml
    with pytest.raises(ParamsError) as refused:
        loaded(tmp_path / "params.yaml")
    assert str(refused.value) == f"{tmp_path / 'tune.yaml'}: {expected}"


def test_the_search_lives_in_tune_yaml_not_in_params_yaml(tmp_path):
    """DVC lists every key of params.yaml in `dvc exp show`: a search there buries the scores."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(shipped(), sort_keys=False))
    with pytest.raises(ParamsError) as refused:
        load_params(path)
    assert str(refused.value) == (f"{path}: the tune section belongs in tune.yaml beside it (no stage reads it, and "
                                  f"DVC lists every key of params.yaml in `dvc exp show`); move it there")
    write_split(tmp_path, shipped())
    (tmp_path / "tune.yaml").write_text("mlp: {}\n")
    with pytest.raises(ParamsError, match=r"tune.yaml: expected one section, tune \(a search per model\); found mlp$"):
        loaded(path)
    (tmp_path / "tune.yaml").unlink()
    with pytest.raises(ParamsError, match=r"tune.yaml: no such file; copy the shipped tune.yaml beside params.yaml$"):
        loaded(path)


def test_a_model_with_no_tune_section_or_none_to_tune_is_refused():
    raw = shipped()
    raw["tune"]["cnn"] = raw["tune"].pop("logistic")
    params, _ = parsed({**raw, "tune": {}})
    with pytest.raises(ParamsError, match=r"^x: tune.cnn: no model 'cnn' under models; tune one of: mlp, logistic$"):
        checked_tuning(raw["tune"], params, "x")
    del raw["tune"]["cnn"]
    with pytest.raises(ParamsError) as refused:
        search_for(checked_tuning(raw["tune"], params, "x"), params, "logistic")
    assert str(refused.value) == ("tune.yaml has no tune.logistic section (it has mlp); add one with the search "
                                  "space (see `tune: mlp:` in the shipped tune.yaml)")


def test_a_bad_search_space_stops_tune_in_one_line_before_tensorflow_is_imported(tmp_path):
    raw = tiny_raw()
    raw["tune"]["mlp"]["space"]["dropout"]["high"] = 1.5
    tiny_repo(tmp_path, raw)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "mnist_pipeline", "tune", "mlp"], cwd=tmp_path,
                          env=repo_env(REPO), capture_output=True, text=True)
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    said = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2 and done.stdout == ""
    assert said == ["error: tune.yaml: tune.mlp.space.dropout.high = 1.5: Input should be less than 1 "
                    "(as models.mlp.dropout)"]
    assert "mnist_pipeline.core.params" in imported  # -X importtime saw the imports
    assert not [name for name in imported if name.split(".")[0] in ("tensorflow", "keras", "mlflow", "optuna")]
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


# --- what a trial draws, and what a worker prints --------------------------------------------------
def test_a_trial_draws_values_the_model_accepts_rounded_as_params_yaml_will_hold_them():
    raw = tiny_raw()
    raw["tune"]["mlp"]["space"] |= {"hidden_units": {"choices": [[16], [32, 16]]},
                                    "batch_size": {"low": 8, "high": 64, "step": 8}}
    params, tunes = parsed(raw)
    tuning, model = search_for(tunes, params, "mlp"), params.model("mlp")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        values = optuna_study.draw(trial, tuning, model)
        assert set(values) == {"learning_rate", "dropout", "hidden_units", "batch_size"}
        assert 0.001 <= values["learning_rate"] <= 0.03 and 0.0 <= values["dropout"] <= 0.3
        assert float(f"{values['learning_rate']:.3g}") == values["learning_rate"]  # 3 significant digits
        assert values["hidden_units"] in ([16], [32, 16]) and values["batch_size"] % 8 == 0
        assert isinstance(values["batch_size"], int)
        trained = optuna_study.trial_model(model, values, tuning)
        assert trained.hidden_units == values["hidden_units"] and trained.epochs == model.epochs
        seen.add(tuple(values["hidden_units"]))
        study.tell(trial, values["learning_rate"])
    assert seen == {(16,), (32, 16)}
    with_epochs = tuning.model_copy(update={"epochs": 5})
    assert optuna_study.trial_model(model, values, with_epochs).epochs == 5


def test_a_worker_prints_one_line_per_trial_and_a_dvc_exp_run_line_dvc_reads_back(tmp_path):
    from dvc.utils.hydra import apply_overrides, get_hydra_sweeps

    values = {"learning_rate": 0.0000282, "dropout": 0.312, "hidden_units": [1024, 512], "batch_size": 256}
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.0712, user_attrs={
        optuna_study.VALUES_ATTR: values}, intermediate_values={1: 0.2, 2: 0.0712}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={
        optuna_study.VALUES_ATTR: values, optuna_study.PRUNED_ATTR: "at epoch 1"}, intermediate_values={1: 2.30125}))
    complete, pruned = study.trials
    line = "learning_rate=0.0000282 dropout=0.312 hidden_units=[1024,512] batch_size=256"
    assert optuna_study.trial_line(complete, "val_loss", best=True) == f"trial 0  complete  val_loss 0.0712  {line}  (best so far)"
    assert optuna_study.trial_line(pruned, "val_loss", best=False) == f"trial 1  pruned (at epoch 1)  val_loss 2.3013  {line}"

    command = optuna_study.try_command("mlp", values)
    words = shlex.split(command)
    assert words[:3] == ["dvc", "exp", "run"] and words[3::2] == ["-S"] * 4
    overrides = words[4::2]
    assert len(get_hydra_sweeps({"params.yaml": overrides})) == 1  # one experiment, not a sweep of list items
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    apply_overrides(path, overrides)  # what `dvc exp run -S` does to params.yaml
    mlp = load_params(path).model("mlp")
    assert {key: getattr(mlp, key) for key in values} == values


def test_apply_changes_only_the_tuned_lines_keeps_the_comments_and_refuses_a_value_the_pipeline_would(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    before = path.read_text().splitlines()
    shipped = load_params(path).model("mlp")
    values = {"learning_rate": 0.00001, "dropout": 0.312, "hidden_units": [1024, 512], "batch_size": shipped.batch_size}
    changed = apply_values(path, "mlp", values)
    assert changed == {"learning_rate": (shipped.learning_rate, 0.00001), "dropout": (shipped.dropout, 0.312),
                       "hidden_units": (shipped.hidden_units, [1024, 512])}
    after = path.read_text().splitlines()
    differ = [(b, a) for b, a in zip(before, after) if b != a]
    assert len(before) == len(after)
    assert [a.strip() for _, a in differ] == ["- 1024", "dropout: 0.312",
                                             "learning_rate: 0.00001       # 0.001 at batch 128, scaled with the batch size"]
    mlp = load_params(path).model("mlp")
    assert (mlp.learning_rate, mlp.dropout, mlp.hidden_units) == (0.00001, 0.312, [1024, 512])
    assert yaml.safe_load(path.read_text())["models"]["mlp"]["learning_rate"] == 0.00001  # a float to PyYAML too
    assert apply_values(path, "mlp", values) == {}  # already there: the file is not touched

    written = path.read_bytes()
    with pytest.raises(ParamsError, match=r"models.mlp.dropout = 1.5: Input should be less than 1"):
        apply_values(path, "mlp", {"dropout": 1.5})
    assert path.read_bytes() == written and [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


# --- the study its workers share -------------------------------------------------------------------
def test_workers_with_another_search_or_no_parent_run_are_refused(tmp_path):
    params, tunes = parsed(tiny_raw())
    tuning = search_for(tunes, params, "mlp")
    storage = optuna_study.open_storage(optuna_study.default_storage(tmp_path))
    made = []
    study, created = optuna_study.open_study(storage, "s", tuning, optuna_study.definition("mlp", params, tuning),
                                       lambda: made.append("parent") or "run-1")
    assert created and made == ["parent"] and study.user_attrs[optuna_study.PARENT_ATTR] == "run-1"
    again, created = optuna_study.open_study(storage, "s", tuning, optuna_study.definition("mlp", params, tuning),
                                       lambda: made.append("parent") or "run-2")
    assert not created and made == ["parent"] and again.user_attrs[optuna_study.PARENT_ATTR] == "run-1"

    other = tiny_raw()
    other["tune"]["mlp"]["space"]["dropout"]["high"] = 0.5
    other["models"]["mlp"]["optimizer"] = "sgd"
    other_params, other_tunes = parsed(other)
    with pytest.raises(PipelineError, match=re.escape(
            "study 's' was made for another search (models.mlp.optimizer, space.dropout differ from this params.yaml "
            "and tune.yaml)")):
        other_tuning = search_for(other_tunes, other_params, "mlp")
        optuna_study.open_study(storage, "s", other_tuning, optuna_study.definition("mlp", other_params, other_tuning),
                                lambda: "x")

    optuna.create_study(storage=storage, study_name="made-elsewhere")  # e.g. `optuna create-study`
    with pytest.raises(PipelineError, match="study 'made-elsewhere' has no MLflow parent run after 1 s"):
        optuna_study.open_study(storage, "made-elsewhere", tuning, {}, lambda: "x", wait_s=1)

    def no_store():
        raise PipelineError("the store is down")

    with pytest.raises(PipelineError, match="the store is down"):
        optuna_study.open_study(storage, "t", tuning, {}, no_store)
    assert "t" not in optuna.get_all_study_names(storage)  # no study left without its parent run


def test_the_mlproject_entry_point_runs_tune_outside_the_project_run():
    command = load_project(REPO).get_entry_point("tune").compute_command({"model": "mlp", "trials": "30"}, None)
    assert command == "env -u MLFLOW_RUN_ID -u MLFLOW_EXPERIMENT_ID python -m mnist_pipeline tune mlp --trials 30"


# --- trials that train -----------------------------------------------------------------------------
@pytest.mark.slow  # trains in TensorFlow (and starts PostgreSQL, or workers): seconds each
def test_a_hopeless_learning_rate_is_pruned_in_optuna_and_a_finished_tagged_run_in_mlflow(tmp_path, clean_env,
                                                                                          capsys, empty_store):
    """Two trials with a learning rate that learns, then one that cannot: the median pruner stops it
    after its first epoch, and the study and MLflow both say so."""
    from mnist_pipeline.core.layout import Layout
    from mnist_pipeline.tracking.store import tracking_uri, use_experiment
    from mnist_pipeline.tuning.trials import create_parent, tune

    raw = tiny_raw(trials=3, epochs=2, pruner="median", startup_trials=2,
                   space={"learning_rate": {"low": 1e-7, "high": 0.03, "log": True}})
    root = tiny_repo(tmp_path, raw, store=empty_store)
    params, tunes = loaded(root / "params.yaml")
    tuning, url = search_for(tunes, params, "mlp"), optuna_study.default_storage(root)
    storage = optuna_study.open_storage(url)
    experiment = use_experiment("tune", root)
    study, _ = optuna_study.open_study(storage, "mlp", tuning, optuna_study.definition("mlp", params, tuning),
                                 lambda: create_parent(MlflowClient(), experiment, "mlp", url, "mlp", params, tuning))
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
    best = min(trials[:2], key=lambda t: t.value)
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
        return subprocess.Popen([sys.executable, "-m", "mnist_pipeline", "tune", "mlp", "--storage", storage, "--study",
                                 study], cwd=root, env=repo_env(REPO), stdout=out, stderr=err,
                                preexec_fn=as_in_a_terminal)


def wait(worker: subprocess.Popen, log: Path, timeout_s: float = 240) -> tuple[int, str, str]:
    try:
        code = worker.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError(f"worker still running after {timeout_s} s:\n{log.with_suffix('.err').read_text()}") from None
    return code, log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()


@pytest.fixture(scope="module")
def pg() -> str:
    with postgres("optuna") as url:
        yield url


def study_runs(root: Path, study: optuna.Study) -> tuple[list, list]:
    """The study's MLflow parent runs and child runs in `root`'s store."""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tune")
    runs = client.search_runs([experiment.experiment_id], f"tags.`tune.study` = '{study.study_name}'")
    return ([r for r in runs if "mlflow.parentRunId" not in r.data.tags],
            [r for r in runs if "mlflow.parentRunId" in r.data.tags])


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
    ran = [int(re.search(r"this worker ran (\d+)", out)[1]) for _, out, _ in results]
    assert sum(ran) == n and all(ran), ran
    # One line per trial a worker ran, each trial printed by one worker only.
    printed = [int(m) for _, out, _ in results for m in re.findall(r"^trial (\d+)  ", out, re.M)]
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
def test_sigterm_to_one_worker_fails_its_trial_kills_its_run_and_the_other_finishes_the_study(tmp_path, pg,
                                                                                            empty_store):
    n = 2
    root = tiny_repo(tmp_path, tiny_raw(trials=n, epochs=25), train=200, store=empty_store)
    first, second = (start_worker(root, pg, "term", tmp_path / name) for name in ("first", "second"))
    client, deadline = MlflowClient(f"sqlite:///{root / 'mlflow.db'}"), time.monotonic() + 180
    training = None
    while training is None:  # the first worker's first trial is in its fit: epochs are being logged
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.err").read_text()
        time.sleep(0.3)
        if client.get_experiment_by_name("tune") is None:
            continue
        runs = client.search_runs([client.get_experiment_by_name("tune").experiment_id],
                                  f"attributes.status = 'RUNNING' and tags.`process.pid` = '{first.pid}'")
        training = next((r for r in runs if "val_loss" in r.data.metrics), None)
    first.send_signal(signal.SIGTERM)
    code, _, err = wait(first, tmp_path / "first")
    trial = int(training.data.tags["tune.trial"])
    assert code == 128 + signal.SIGTERM
    assert err.splitlines()[-1] == (f"error: interrupted by SIGTERM; trial {trial} of study 'term' is marked failed "
                                    f"and its MLflow run KILLED; the study's other workers carry on, and running "
                                    f"the command again continues it")
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

    root = make_repo(tmp_path / "repo", small_params(None, "tune"))
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
        "Data and pipelines are up to date.")
    before = (root / "params.yaml").read_text().splitlines()

    done = sh(root, sys.executable, "-m", "mnist_pipeline", "tune", "mlp", "--apply")
    study = optuna.load_study(study_name="mlp", storage=optuna_study.default_storage(root))
    best = study.best_trial.user_attrs[optuna_study.VALUES_ATTR]
    after = (root / "params.yaml").read_text().splitlines()
    changed = [(b, a) for b, a in zip(before, after) if b != a]
    assert len(before) == len(after) and [b.split(":")[0].strip() for b, _ in changed] == ["dropout", "learning_rate"]
    assert changed[1][1].endswith("# 0.001 at batch 128, scaled with the batch size")  # its comment kept
    mlp = load_params(root / "params.yaml").model("mlp")
    assert (mlp.learning_rate, mlp.dropout) == (best["learning_rate"], best["dropout"])
    assert f"models.mlp.dropout 0.2 -> {optuna_study.text(best['dropout'])}" in done.stdout.splitlines()[-2]

    status = sh(root, "dvc", "status", "train@mlp", "train@logistic").stdout
    assert status.startswith("train@mlp:") and "train@logistic" not in status
    assert re.search(r"modified: +models.mlp$", status, re.M)  # train@mlp declares models.mlp as one param
    diff = yaml.safe_load(sh(root, "dvc", "params", "diff", "--json").stdout)["params.yaml"]
    assert set(diff) == {"models.mlp.learning_rate", "models.mlp.dropout"}  # what DVC sees changed: no tune.*
    assert sh(root, "git", "status", "--porcelain").stdout.splitlines() == [" M params.yaml"]  # optuna.db is ignored
