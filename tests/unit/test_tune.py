"""`tune`: an Optuna study whose trials are training runs. Real Optuna (SQLite and PostgreSQL
storages), a real MLflow SQLite store, real Keras on tiny made-up digits, real dvc; the data folders
hold the train and validation splits only, so every trial here runs without test.npz.

The fast parts first (the search space's checks, the values a trial draws, the lines it prints, the
params.yaml edit, the study's refusals): no TensorFlow in them. The tests that train are marked slow."""

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.projects import load_project
from optuna.trial import TrialState

from mnist_pipeline.core.errors import ParamsError, PipelineError
from mnist_pipeline.core.params import MLPParams, Params, load_params, parse_params
from mnist_pipeline.data.splits import save_splits
from mnist_pipeline.tracking.sqlite_url import sqlite_url
from mnist_pipeline.tuning import optuna_study
from mnist_pipeline.tuning.params_edit import apply_values
from mnist_pipeline.tuning.schema import TuneParams, checked_tuning, load_tuning, search_for
from tests.support.cli import run_main
from tests.support.harness import REPO, repo_env
from tests.support.stores import empty_store
from tests.support.tiny import digits

TUNED = ("learning_rate", "dropout")


def shipped() -> dict:
    """The shipped params.yaml, with tune.yaml's section beside its own."""
    return yaml.safe_load((REPO / "params.yaml").read_text()) | yaml.safe_load((REPO / "tune.yaml").read_text())


def parsed(raw: dict) -> tuple[Params, dict[str, TuneParams]]:
    """`raw` checked as params.yaml (all but the tune section) and tune.yaml (the tune section) are."""
    params = parse_params(
        yaml.safe_dump({k: v for k, v in raw.items() if k != "tune"}, sort_keys=False).encode(), Path("params.yaml")
    )
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
    raw["models"]["mlp"] |= {
        "hidden_units": [16],
        "epochs": epochs,
        "batch_size": 20,
        "lr_schedule": "constant",
        "learning_rate": 0.003,
        "early_stopping_patience": 0,
        # Full rate from the first step and no augmentation: with both as shipped, 2 epochs of 6 steps
        # learnt nothing, and which trial the pruner stopped hung on the random draws.
        "warmup_epochs": 0,
        "augmentation": {"enabled": False},
    }
    raw["data"] |= {"validation_size": 60, "train_size": 120}
    raw["mlflow"]["experiment"] = experiment
    raw["registry"]["enabled"] = False
    raw["tune"]["mlp"] = {
        "trials": trials,
        "objective": "val_loss",
        "pruner": "none",
        "startup_trials": 2,
        "warmup_epochs": 0,
        "seed": 7,
        "space": {"learning_rate": {"low": 0.001, "high": 0.03, "log": True}, "dropout": {"low": 0.0, "high": 0.3}},
    } | tune
    return raw


def tiny_repo(root: Path, raw: dict, train: int = 120, store: Path | None = None) -> Path:
    """`root` with params.yaml and data/processed as the preprocess stage leaves it, but no test.npz;
    with `store`, a copy of that empty MLflow store (creating its tables takes seconds)."""
    save_splits({"train": digits(train, 1), "validation": digits(60, 2)}, root / "data" / "processed")
    write_split(root, raw)
    if store:
        shutil.copy(store, root / "mlflow.db")
    return root


# --- the search space, checked with the rest of params.yaml ----------------------------------------
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda t: t["space"].update(dropuot={"low": 0.0, "high": 0.5}),
            "unknown key 'tune.mlp.space.dropuot'; did you mean 'dropout'?",
        ),
        (
            lambda t: t["space"].update(dropout={"low": 0.0, "high": 1.0}),
            "tune.mlp.space.dropout.high = 1.0: Input should be less than 1 (as models.mlp.dropout)",
        ),
        (
            lambda t: t["space"].update(dropout={"low": 0.4, "high": 0.1}),
            "tune.mlp.space.dropout = {'high': 0.1, 'low': 0.4}: low (0.4) must be below high (0.1)",
        ),
        (
            lambda t: t["space"].update(learning_rate={"low": 0.0, "high": 0.1, "log": True}),
            "tune.mlp.space.learning_rate = {'high': 0.1, 'log': True, 'low': 0.0}: log: true needs low above 0 "
            "(low is 0)",
        ),
        (
            lambda t: t["space"].update(hidden_units={"low": 16, "high": 512}),
            "tune.mlp.space.hidden_units: hidden_units is not a number, so it takes choices, not a range: e.g. "
            "{choices: [[512, 512]]}",
        ),
        (
            lambda t: t["space"].update(hidden_units={"choices": [[256], [16384, 16384]]}),
            "tune.mlp.space.hidden_units.choices[1] = [16384, 16384]: 281,477,130 weights, more than the limit of "
            "50,000,000; use fewer or smaller layers",
        ),
        (
            lambda t: t["space"].update(batch_size={"low": 32, "high": 100.5}),
            "tune.mlp.space.batch_size: batch_size takes whole numbers; give low, high (and step) without a fraction",
        ),
        (
            lambda t: t["space"].update(optimizer={"choices": ["adam", "adom"]}),
            "tune.mlp.space.optimizer.choices[1] = 'adom': Input should be 'adam', 'adamw', 'sgd' or 'rmsprop' "
            "(as models.mlp.optimizer)",
        ),
        (
            lambda t: t["space"].update(dropout=0.3),
            "tune.mlp.space.dropout = 0.3: give a range {low: ..., high: ...} or a list {choices: [...]}",
        ),
        (
            lambda t: t.update(trails=30),
            "unknown key 'tune.mlp.trails'; allowed here: trials, objective, pruner, startup_trials, warmup_epochs, "
            "epochs, seed, space",
        ),
        (
            lambda t: t.update(objective="test_accuracy"),
            "tune.mlp.objective = 'test_accuracy': Input should be 'val_loss' or 'val_accuracy'",
        ),
        (
            lambda t: t.update(epochs=3) or t["space"].update(epochs={"low": 1, "high": 5}),
            "tune.mlp.epochs and tune.mlp.space.epochs: both set the trials' epochs; keep one",
        ),
    ],
)
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
    assert str(refused.value) == (
        f"{path}: the tune section belongs in tune.yaml beside it (no stage reads it, and "
        f"DVC lists every key of params.yaml in `dvc exp show`); move it there"
    )
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
    assert str(refused.value) == (
        "tune.yaml has no tune.logistic section (it has mlp); add one with the search "
        "space (see `tune: mlp:` in the shipped tune.yaml)"
    )


def test_a_bad_search_space_stops_tune_in_one_line_before_tensorflow_is_imported(tmp_path):
    raw = tiny_raw()
    raw["tune"]["mlp"]["space"]["dropout"]["high"] = 1.5
    tiny_repo(tmp_path, raw)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mnist_pipeline", "tune", "mlp"],
        cwd=tmp_path,
        env=repo_env(REPO),
        capture_output=True,
        text=True,
    )
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    said = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2 and done.stdout == ""
    assert said == [
        "error: tune.yaml: tune.mlp.space.dropout.high = 1.5: Input should be less than 1 (as models.mlp.dropout)"
    ]
    assert "mnist_pipeline.core.params" in imported  # -X importtime saw the imports
    assert not [name for name in imported if name.split(".")[0] in ("tensorflow", "keras", "mlflow", "optuna")]
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


# --- what a trial draws, and what a worker prints --------------------------------------------------
def test_a_trial_draws_values_the_model_accepts_rounded_as_params_yaml_will_hold_them():
    raw = tiny_raw()
    raw["tune"]["mlp"]["space"] |= {
        "hidden_units": {"choices": [[16], [32, 16]]},
        "batch_size": {"low": 8, "high": 64, "step": 8},
    }
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
        assert isinstance(trained, MLPParams)
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
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            value=0.0712,
            user_attrs={optuna_study.VALUES_ATTR: values},
            intermediate_values={1: 0.2, 2: 0.0712},
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.PRUNED,
            user_attrs={optuna_study.VALUES_ATTR: values, optuna_study.PRUNED_ATTR: "at epoch 1"},
            intermediate_values={1: 2.30125},
        )
    )
    complete, pruned = study.trials
    line = "learning_rate=0.0000282 dropout=0.312 hidden_units=[1024,512] batch_size=256"
    assert (
        optuna_study.trial_line(complete, "val_loss", best=True)
        == f"trial 0  complete  val_loss 0.0712  {line}  (best so far)"
    )
    assert (
        optuna_study.trial_line(pruned, "val_loss", best=False)
        == f"trial 1  pruned (at epoch 1)  val_loss 2.3013  {line}"
    )

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
    assert isinstance(shipped, MLPParams)
    values = {"learning_rate": 0.00001, "dropout": 0.312, "hidden_units": [1024, 512], "batch_size": shipped.batch_size}
    changed = apply_values(path, "mlp", values)
    assert changed == {
        "learning_rate": (shipped.learning_rate, 0.00001),
        "dropout": (shipped.dropout, 0.312),
        "hidden_units": (shipped.hidden_units, [1024, 512]),
    }
    after = path.read_text().splitlines()
    differ = [(b, a) for b, a in zip(before, after, strict=False) if b != a]
    assert len(before) == len(after)
    assert [a.strip() for _, a in differ] == [
        "- 1024",
        "dropout: 0.312",
        "learning_rate: 0.00001       # was 0.004 before tune --apply",
    ]
    # The comment above `epochs`, which ruamel keeps with the line before it, is not touched.
    assert [line for line in after if line.strip().startswith("#")] == [
        line for line in before if line.strip().startswith("#")
    ]
    mlp = load_params(path).model("mlp")
    assert isinstance(mlp, MLPParams)
    assert (mlp.learning_rate, mlp.dropout, mlp.hidden_units) == (0.00001, 0.312, [1024, 512])
    assert yaml.safe_load(path.read_text())["models"]["mlp"]["learning_rate"] == 0.00001  # a float to PyYAML too
    assert apply_values(path, "mlp", values) == {}  # already there: the file is not touched

    written = path.read_bytes()
    with pytest.raises(ParamsError, match=r"models.mlp.dropout = 1.5: Input should be less than 1"):
        apply_values(path, "mlp", {"dropout": 1.5})
    assert path.read_bytes() == written and [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


# --- the study its workers share -------------------------------------------------------------------
@pytest.fixture(scope="module")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables (creating them takes seconds: made once per process, then
    copied: tests/support/stores.py)."""
    return empty_store(tmp_path_factory.mktemp("mlflow"))


def mlflow_store(empty: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(empty, path)
    return path


def tables(path: Path) -> list[str]:
    return sorted(optuna_study.sqlite_tables(path))


FIX = (
    "give the study a database of its own: leave out --storage (optuna.db at the repository root) "
    "or name another, e.g. --storage sqlite:///optuna-mlp.db"
)


@pytest.mark.parametrize("how", ["absolute", "relative", "not made yet", "another repository's"])
def test_a_storage_that_is_an_mlflow_store_is_refused_before_anything_is_written(tmp_path, how, empty_mlflow_db):
    """Before: Optuna wrote its 12 tables into mlflow.db, then failed with a RuntimeError traceback."""
    root = tiny_repo(tmp_path / "repo", tiny_raw())
    store = {"not made yet": root / "mlflow.db", "another repository's": tmp_path / "other" / "mlflow.db"}.get(how)
    store = store if how == "not made yet" else mlflow_store(empty_mlflow_db, store or root / "mlflow.db")
    storage = "sqlite:///mlflow.db" if how == "relative" else f"sqlite:///{store}"
    before = {path: (tables(path), path.read_bytes()) for path in tmp_path.rglob("mlflow.db")}

    done = run_main(["tune", "mlp", "--storage", storage], root, repo_env(REPO))

    if how == "another repository's":
        expected = f"error: --storage {storage}: {store} is an MLflow tracking store (it has MLflow's tables); {FIX}"
    else:
        tracking = f"sqlite:///{root / 'mlflow.db'}?timeout=60"
        expected = f"error: --storage {storage} is the MLflow tracking store ({tracking}); {FIX}"
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [expected]
    assert {path: (tables(path), path.read_bytes()) for path in tmp_path.rglob("mlflow.db")} == before
    made = {"data", "params.yaml", "tune.yaml"} | ({"mlflow.db"} if how in ("absolute", "relative") else set())
    assert {p.name for p in root.iterdir()} == made, "no optuna.db, and no mlflow.db where there was none"


def test_a_storage_on_the_tracking_stores_database_server_is_refused_without_connecting(tmp_path):
    """MLflow's store in PostgreSQL, and a study storage naming the same database (another driver,
    with a password): refused from the URLs alone, so no server is needed here."""
    root = tiny_repo(tmp_path, tiny_raw())
    storage = "postgresql+psycopg://me:secret@127.0.0.1:9/mlflow"
    done = run_main(
        ["tune", "mlp", "--storage", storage],
        root,
        repo_env(REPO, MLFLOW_TRACKING_URI="postgresql://me@127.0.0.1:9/mlflow"),
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: --storage postgresql+psycopg://me:***@127.0.0.1:9/mlflow is the MLflow tracking store "
        f"(postgresql://me@127.0.0.1:9/mlflow); {FIX}"
    ]


def test_a_study_storage_is_told_from_the_tracking_store(tmp_path, empty_mlflow_db):
    store = mlflow_store(empty_mlflow_db, tmp_path / "mlflow.db")
    (tmp_path / "link.db").symlink_to(store)
    assert optuna_study.same_database(f"sqlite:///{tmp_path}/link.db", sqlite_url(store, timeout=60))
    assert not optuna_study.same_database(optuna_study.default_storage(tmp_path), sqlite_url(store))
    assert not optuna_study.same_database("postgresql://h/optuna", "postgresql://h/mlflow")
    assert not optuna_study.same_database("postgresql://h/mlflow", "http://h:5000")
    study = optuna_study.default_storage(tmp_path)
    optuna_study.open_storage(study).engine.dispose()
    optuna_study.check_not_tracking_store(study, sqlite_url(store))  # Optuna's own database: accepted


def test_workers_with_another_search_or_no_parent_run_are_refused(tmp_path):
    params, tunes = parsed(tiny_raw())
    tuning = search_for(tunes, params, "mlp")
    storage = optuna_study.open_storage(optuna_study.default_storage(tmp_path))
    made: list[str] = []

    def parent(run_id: str) -> Callable[[], str]:
        """A maker of the study's parent run that notes each call in `made`."""

        def make() -> str:
            made.append("parent")
            return run_id

        return make

    study, created = optuna_study.open_study(
        storage, "s", tuning, optuna_study.definition("mlp", params, tuning), parent("run-1")
    )
    assert created and made == ["parent"] and study.user_attrs[optuna_study.PARENT_ATTR] == "run-1"
    again, created = optuna_study.open_study(
        storage, "s", tuning, optuna_study.definition("mlp", params, tuning), parent("run-2")
    )
    assert not created and made == ["parent"] and again.user_attrs[optuna_study.PARENT_ATTR] == "run-1"

    other = tiny_raw()
    other["tune"]["mlp"]["space"]["dropout"]["high"] = 0.5
    other["models"]["mlp"]["optimizer"] = "sgd"
    other_params, other_tunes = parsed(other)
    other_tuning = search_for(other_tunes, other_params, "mlp")
    with pytest.raises(
        PipelineError,
        match=re.escape(
            "study 's' was made for another search (models.mlp.optimizer, space.dropout differ from this params.yaml "
            "and tune.yaml)"
        ),
    ):
        optuna_study.open_study(
            storage, "s", other_tuning, optuna_study.definition("mlp", other_params, other_tuning), lambda: "x"
        )

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
