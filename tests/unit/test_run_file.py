"""Evaluate logs into the run models/<model>/mlflow_run.json names only when that run trained this very
model file: its `model` tag, its experiment, the model's sha256 (a run tag and in the run file) and the
logged model it names. Otherwise it refuses in one line before writing anything, and the registry
promotes nothing. The rule on every case (a pure function), then each mismatch on a real store."""

import json
import re
import shutil

import pytest
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.layout import RUN_FILE, Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.evaluation.evaluator import Recorded, RunFile, evaluate, mismatch
from mnist_pipeline.tracking.run_file import MODEL_DIGEST_TAG, file_sha256, read_model_id
from mnist_pipeline.training.trainer import train
from tests.support.tiny import cleared_env, store_uri, tiny_layout, tiny_params

RUN, OTHER_RUN, MODEL, SHA, OTHER_SHA, EXP = "r" * 32, "o" * 32, "m-1", "a" * 64, "b" * 64, "1"
GOOD = Recorded("mlp", EXP, SHA, ("mlp", RUN))


@pytest.mark.parametrize(
    ("run_file", "recorded", "logs_into_it", "expected"),
    [
        # `dvc repro`: the run trained this file and logged this model.
        (RunFile(RUN, MODEL, SHA), GOOD, True, None),
        (RunFile(RUN, None, SHA), GOOD._replace(logged_model=None), True, None),  # it logged no model: not registered
        # `mlflow run -e evaluate` into a run of another experiment: the training run's experiment does not matter.
        (RunFile(RUN, MODEL, SHA), GOOD._replace(experiment_id="2"), False, None),
        # Trained against another store: a new run, if the file is the one the run file records.
        (RunFile(RUN, MODEL, SHA), None, False, None),
        (RunFile(None), None, False, None),  # no run file: a new run
        # The case: the run file names the logistic run.
        (
            RunFile(RUN, MODEL, SHA),
            GOOD._replace(model="logistic"),
            True,
            f"it names run {RUN}, which trained model 'logistic', not 'mlp'",
        ),
        (
            RunFile(RUN, MODEL, SHA),
            GOOD._replace(model=None),
            False,
            f"it names run {RUN}, which trained model None, not 'mlp'",
        ),
        (
            RunFile(RUN, MODEL, SHA),
            GOOD._replace(experiment_id="2"),
            True,
            f"it names run {RUN}, of experiment 2, not of this one (1)",
        ),
        (
            RunFile(RUN, MODEL, None),
            GOOD,
            True,
            "it records no digest of the model (an older version wrote it), so its run cannot be checked",
        ),
        (
            RunFile(RUN, MODEL, OTHER_SHA),
            GOOD,
            True,
            "the model.keras beside it is not the one it records (sha256 aaaaaaaaaaaa…, recorded bbbbbbbbbbbb…)",
        ),
        (
            RunFile(RUN, MODEL, OTHER_SHA),
            None,
            False,
            "the model.keras beside it is not the one it records (sha256 aaaaaaaaaaaa…, recorded bbbbbbbbbbbb…)",
        ),
        (
            RunFile(RUN, MODEL, SHA),
            GOOD._replace(model_sha256=OTHER_SHA),
            True,
            f"it names run {RUN}, which saved another model.keras (sha256 bbbbbbbbbbbb…, this one aaaaaaaaaaaa…)",
        ),
        (
            RunFile(RUN, MODEL, SHA),
            GOOD._replace(model_sha256=None),
            True,
            f"it names run {RUN}, which records no digest of its model (its training did not finish logging)",
        ),
        (
            RunFile(RUN, MODEL, SHA),
            GOOD._replace(logged_model=("logistic", OTHER_RUN)),
            True,
            f"it names run {RUN} and logged model m-1, which is model 'logistic' of run {OTHER_RUN}",
        ),
        (
            RunFile(RUN, MODEL, SHA),
            GOOD._replace(logged_model=("mlp", OTHER_RUN)),
            True,
            f"it names run {RUN} and logged model m-1, which is model 'mlp' of run {OTHER_RUN}",
        ),
        (
            RunFile(RUN, MODEL, SHA),
            GOOD._replace(logged_model=None),
            True,
            f"it names run {RUN} and logged model m-1, which is not in the store",
        ),
    ],
    ids=[
        "this-training",
        "no-logged-model",
        "launched-elsewhere",
        "other-store",
        "no-run-file",
        "logistic-run",
        "untagged-run",
        "other-experiment",
        "no-digest",
        "file-replaced",
        "file-replaced-other-store",
        "run-saved-another-file",
        "run-without-digest",
        "logged-model-of-logistic",
        "logged-model-of-another-run",
        "logged-model-missing",
    ],
)
def test_mismatch(run_file, recorded, logs_into_it, expected):
    assert mismatch("mlp", SHA, run_file, recorded, EXP, logs_into_it) == expected


def two_models(experiment: str = "runfile") -> Params:
    """The tiny mlp beside a tiny logistic model, with the registry on."""
    raw = tiny_params(experiment, registry={"enabled": True, "min_accuracy": 0.0}, epochs=1).model_dump(mode="json")
    raw["models"]["logistic"] = {
        "type": "logistic",
        "optimizer": "adam",
        "learning_rate": 0.01,
        "lr_schedule": "constant",
        "epochs": 1,
        "batch_size": 20,
        "early_stopping_patience": 0,
        "seed": 0,
    }
    return Params.model_validate(raw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both models trained into the store at the layout's root: (layout, {model: run id})."""
    layout = tiny_layout(tmp_path_factory.mktemp("runfile"))
    with cleared_env():
        return layout, {name: train(name, two_models(), layout) for name in ("mlp", "logistic")}


@pytest.fixture
def folder(trained, tmp_path, clean_env):
    """A copy of the trained layout's data and models, logging into its store: (layout, run ids, client)."""
    layout, runs = trained
    for part in ("data/processed", "models"):
        shutil.copytree(layout.root / part, tmp_path / part)
    clean_env.setenv("MLFLOW_TRACKING_URI", store_uri(layout))
    return Layout(tmp_path), runs, MlflowClient(store_uri(layout))


def store_state(client: MlflowClient, runs: dict[str, str]) -> tuple:
    """The training runs' metrics and tags, and every registered model version."""
    return (
        [(client.get_run(run_id).data.metrics, client.get_run(run_id).data.tags) for run_id in runs.values()],
        [(v.name, v.version, v.run_id) for v in client.search_model_versions()],
    )


def edit_run_file(model_dir, **changes) -> None:
    path = model_dir / RUN_FILE
    ids = json.loads(path.read_text()) | changes
    path.write_text(json.dumps({key: value for key, value in ids.items() if value is not None}))


def logistic_run_file(mlp, logistic, runs):
    shutil.copy(logistic / RUN_FILE, mlp / RUN_FILE)


def logistic_folder(mlp, logistic, runs):
    shutil.rmtree(mlp)
    shutil.copytree(logistic, mlp)


def logistic_model_file(mlp, logistic, runs):
    shutil.copy(logistic / "model.keras", mlp / "model.keras")


def logistic_model_file_and_its_digest(mlp, logistic, runs):
    logistic_model_file(mlp, logistic, runs)
    edit_run_file(mlp, model_sha256=file_sha256(mlp / "model.keras"))


def logistic_logged_model(mlp, logistic, runs):
    edit_run_file(mlp, model_id=read_model_id(logistic))


def no_digest(mlp, logistic, runs):
    edit_run_file(mlp, model_sha256=None)


CASES = {
    # The case, then the whole logistic folder copied over the MLP's.
    "logistic-run-file": (logistic_run_file, "it names run {logistic}, which trained model 'logistic', not 'mlp'"),
    "logistic-folder": (logistic_folder, "it names run {logistic}, which trained model 'logistic', not 'mlp'"),
    "model-file-replaced": (logistic_model_file, "the model.keras beside it is not the one it records .*"),
    "digest-edited-to-match": (
        logistic_model_file_and_its_digest,
        "it names run {mlp}, which saved another model.keras .*",
    ),
    "logged-model-of-logistic": (
        logistic_logged_model,
        "it names run {mlp} and logged model m-\\w+, which is model 'logistic' of run {logistic}",
    ),
    "no-digest": (
        no_digest,
        "it records no digest of the model \\(an older version wrote it\\), so its run cannot be checked",
    ),
}


@pytest.mark.parametrize(("damage", "problem"), CASES.values(), ids=CASES.keys())
def test_evaluate_refuses_a_run_file_that_is_not_this_trainings(folder, damage, problem):
    layout, runs, client = folder
    damage(layout.model_dir("mlp"), layout.model_dir("logistic"), runs)
    before = store_state(client, runs)
    with pytest.raises(PipelineError) as refused:
        evaluate("mlp", two_models(), layout)

    expected = (
        re.escape(f"{layout.run_file('mlp')}: ")
        + problem.format(**runs)
        + re.escape(
            "; nothing was logged: restore the folder with `dvc checkout models/mlp` or retrain it with "
            "`dvc repro -f train@mlp`"
        )
    )
    assert re.fullmatch(expected, str(refused.value)), str(refused.value)
    assert not layout.eval_reports("mlp").folder.exists()
    assert store_state(client, runs) == before  # no metric, tag or registered version anywhere


def test_evaluate_refuses_a_run_of_another_experiment(folder):
    layout, runs, client = folder
    before = store_state(client, runs)
    with pytest.raises(
        PipelineError,
        match=f"mlflow_run.json: it names run {runs['mlp']}, of experiment "
        r"\d+, not of this one \(\d+\); nothing was logged",
    ):
        evaluate("mlp", two_models("elsewhere"), layout)
    assert not layout.eval_reports("mlp").folder.exists() and store_state(client, runs) == before


def test_evaluate_logs_into_this_trainings_run_and_registers_its_model(folder):
    layout, runs, client = folder
    scores = evaluate("mlp", two_models(), layout)

    assert client.get_run(runs["mlp"]).data.metrics["test_accuracy"] == scores["accuracy"]
    assert "test_accuracy" not in client.get_run(runs["logistic"]).data.metrics
    [version] = client.search_model_versions("name = 'mnist-mlp'")
    assert version.run_id == runs["mlp"]
    assert client.get_run(runs["mlp"]).data.tags[MODEL_DIGEST_TAG] == file_sha256(layout.model_file("mlp"))
