"""The evaluate stage: which run it logs into (a pure choice, every case), its computation on small
arrays, and evaluate() itself on a tiny trained model, whose run holds the params of a training run
whichever path it takes."""

import json
import logging
import os
import signal
import time

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.errors import Terminated
from mnist_pipeline.core.layout import EvalReports
from mnist_pipeline.core.params import LogisticParams
from mnist_pipeline.evaluation.evaluator import RunChoice, choose_run, evaluate, interrupts_held, score
from mnist_pipeline.training.models import build
from mnist_pipeline.training.trainer import train
from tests.support.stores import empty_store
from tests.support.tiny import cleared_env, digits, store_uri, tiny_layout, tiny_params

TRAINING_RUN, LAUNCHED = "a" * 32, "b" * 32


@pytest.mark.parametrize(
    ("recorded", "exists", "launched", "expected"),
    [
        # `dvc repro`: the training run is in the store; nothing else launched.
        (TRAINING_RUN, True, None, RunChoice(TRAINING_RUN, new=False, warn=False)),
        # Launched as the training run itself.
        (TRAINING_RUN, True, TRAINING_RUN, RunChoice(TRAINING_RUN, new=False, warn=False)),
        # `mlflow run -e evaluate` opened a run of its own.
        (TRAINING_RUN, True, LAUNCHED, RunChoice(LAUNCHED, new=True, warn=False)),
        # Trained against another store, or restored from DVC's cache: a new run, and say so.
        (TRAINING_RUN, False, None, RunChoice(None, new=True, warn=True)),
        (TRAINING_RUN, False, TRAINING_RUN, RunChoice(TRAINING_RUN, new=True, warn=False)),
        (TRAINING_RUN, False, LAUNCHED, RunChoice(LAUNCHED, new=True, warn=False)),
        # No run file (a model folder from before runs were recorded).
        (None, False, None, RunChoice(None, new=True, warn=True)),
        (None, False, LAUNCHED, RunChoice(LAUNCHED, new=True, warn=False)),
    ],
    ids=[
        "resume",
        "launched-as-training",
        "launched",
        "missing",
        "missing-launched-as-training",
        "missing-launched",
        "no-run-file",
        "no-run-file-launched",
    ],
)
def test_choose_run(recorded, exists, launched, expected):
    assert choose_run(recorded, exists, launched) == expected


def test_score_predicts_scores_and_writes_every_report(tmp_path):
    params = LogisticParams(
        type="logistic",
        optimizer="adam",
        learning_rate=0.01,
        lr_schedule="constant",
        epochs=1,
        batch_size=10,
        early_stopping_patience=0,
        seed=0,
    )
    model = build(params, steps_per_epoch=5)
    model.fit(*digits(50, 1), epochs=1, batch_size=10, verbose=0)
    x, y = digits(40, 3)
    scores, classes = score(model, "logistic", x, y, tmp_path / "eval")

    reports = EvalReports(tmp_path / "eval")
    assert sorted(reports.folder.iterdir()) == sorted(reports.all)
    assert json.loads(reports.metrics.read_text()) == {"logistic": scores}
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    assert scores["accuracy"] == round(float(np.mean(predicted == y)), 4)
    assert classes["support"].tolist() == [4] * 10
    assert mlflow.active_run() is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny layout whose mlp was trained (one epoch) into the store at its root: (layout, params, run id)."""
    layout = tiny_layout(tmp_path_factory.mktemp("trained"))
    params = tiny_params(epochs=1)
    with cleared_env():
        run_id = train("mlp", params, layout)
    return layout, params, run_id


def runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, experiment
    return client.search_runs([found.experiment_id])


def test_evaluate_logs_into_the_training_run(trained, clean_env):
    layout, params, run_id = trained
    before = {run.info.run_id for run in runs(store_uri(layout), "tiny")}
    scores = evaluate("mlp", params, layout)

    assert {run.info.run_id for run in runs(store_uri(layout), "tiny")} == before  # no new run
    run = MlflowClient(store_uri(layout)).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["test_accuracy"] == scores["accuracy"]
    assert "training_run_id" not in run.data.tags


def test_a_new_run_holds_the_params_of_the_training_run(trained, clean_env, monkeypatch, tmp_path, caplog):
    """Trained against another store: evaluate opens a run of its own there, with what a training run holds."""
    layout, params, run_id = trained
    (tmp_path / "other").mkdir()
    other = f"sqlite:///{empty_store(tmp_path / 'other')}"  # a store without the run: MLflow's tables, copied
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.evaluation.evaluator"):
        scores = evaluate("mlp", params, layout)

    assert f"training run {run_id} is not in {other}; logging the evaluation as a new run" in caplog.text
    [new] = runs(other, "tiny")
    training = MlflowClient(store_uri(layout)).get_run(run_id)
    assert new.data.params == training.data.params
    assert new.data.tags["training_run_id"] == run_id and new.info.run_name.startswith("mlp-")
    assert new.data.metrics["test_accuracy"] == scores["accuracy"] and new.info.status == "FINISHED"


def test_a_run_launched_by_mlflow_run_gets_the_evaluation_and_the_params_of_the_training_run(
    trained, clean_env, monkeypatch
):
    """`mlflow run -e evaluate -P model=mlp` opens a run holding one param and names it in MLFLOW_RUN_ID."""
    layout, params, run_id = trained
    client = MlflowClient(store_uri(layout))
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None, "tiny"
    launched = client.create_run(experiment.experiment_id).info.run_id
    client.log_param(launched, "model", "mlp")
    monkeypatch.setenv("MLFLOW_RUN_ID", launched)
    scores = evaluate("mlp", params, layout)

    run = client.get_run(launched)
    assert run.data.params == client.get_run(run_id).data.params
    assert run.data.tags["training_run_id"] == run_id
    assert run.data.metrics["test_accuracy"] == scores["accuracy"] and run.info.status == "FINISHED"
    # The model the training run logged is an input of this run.
    model_id = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    assert run.inputs is not None, "the run has no inputs"
    assert [m.model_id for m in run.inputs.model_inputs] == [model_id[0].model_id]


def test_the_registry_step_holds_the_first_interrupt_and_a_second_stops_it(caplog):
    """Real signals to this process: the first is said and held, the block goes on; a second raises
    as an interrupt always did; afterwards the handlers are the ones from before."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    went_on = []

    def registry_step() -> None:
        with interrupts_held(until_exit=False):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs in the main thread between bytecodes: by now
            went_on.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)

    with pytest.raises(Terminated):
        registry_step()
    assert went_on == [True]
    assert "SIGINT came while the registry was being updated: the stage finishes first" in caplog.text
    assert {signum: signal.getsignal(signum) for signum in before} == before
