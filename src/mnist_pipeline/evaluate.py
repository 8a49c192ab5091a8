"""The evaluate stage: test-set metrics, written for DVC and logged to the MLflow run that
trained the model, so the compare view shows params and test metrics side by side."""

import logging
import os
from pathlib import Path
from typing import NamedTuple

import mlflow
import numpy as np
import pandas as pd

from mnist_pipeline import metrics, registry, tracking
from mnist_pipeline.atomic import check_writable
from mnist_pipeline.config import Params
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.keras_file import load_keras, restore_fix
from mnist_pipeline.layout import EvalReports, Layout
from mnist_pipeline.splits import load_split

log = logging.getLogger(__name__)


def evaluate(name: str, params: Params, layout: Layout) -> dict[str, float]:
    """Evaluate model `name` on the test set; log into its training run; return the headline scores."""
    model_file = layout.model_file(name)
    if not model_file.is_file():
        raise PipelineError(f"{model_file} is missing; run its train stage first (dvc repro train@{name})")
    reports = layout.eval_reports(name)
    check_writable(reports.folder.parent)
    recorded = tracking.read_run_id(layout.model_dir(name))  # a damaged run file stops us before any report is written
    x_test, y_test = load_split(layout.processed, "test")
    model = load_keras(model_file, restore_fix(layout.model_dir(name)))
    scores, classes = score(model, name, x_test, y_test, reports.folder)

    tracking.use_experiment(params.mlflow.experiment, layout.root)
    recorded_exists = bool(recorded) and tracking.run_exists(recorded)
    # Under `mlflow run -e evaluate`, MLflow has opened a run of its own and names it in MLFLOW_RUN_ID.
    choice = choose_run(recorded, recorded_exists, os.environ.get("MLFLOW_RUN_ID"))
    # The logged model lives in the store only when its run does.
    model_id = tracking.read_model_id(layout.model_dir(name)) if recorded_exists else None
    if choice.warn:
        log.warning("training run %s is not in %s; logging the evaluation as a new run", recorded,
                    tracking.tracking_uri(layout.root))
    if choice.new:
        tags = tracking.run_tags(name, layout.root) | {"training_run_id": str(recorded)}
        run = tracking.active_run(run_id=choice.run_id, run_name=tracking.run_name(name), tags=tags)
    else:
        run = tracking.active_run(run_id=choice.run_id)
    with run as active:
        if choice.new:  # the params of a training run, so that this run lines up with those
            tracking.log_params(tracking.training_params(name, params))
            if model_id:  # it evaluates a model another run logged
                tracking.log_model_input(active.info.run_id, model_id)
        log_evaluation(active.info.run_id, (x_test, y_test), layout.processed / "test.npz", model_id, scores,
                       classes, reports)
    if model_id:
        registry.promote(params.registry, name, model_id, scores["accuracy"])
    elif params.registry.enabled:
        why = (f"{layout.run_file(name)} names no logged model (an older version trained it); "
               f"retrain it: dvc repro -f train@{name}"
               if recorded_exists else "the run that logged the model is not in this tracking store")
        log.warning("%s: not registered: %s", name, why)
    log.info("%s: test accuracy %.4f, macro F1 %.4f", name, scores["accuracy"], scores["f1"])
    return scores


def score(model, name: str, x_test: np.ndarray, y_test: np.ndarray,
          out_dir: Path) -> tuple[dict[str, float], pd.DataFrame]:
    """Predict the test images, score the predictions, and write the reports into `out_dir`;
    return the headline scores and the per-class table. No MLflow here."""
    probabilities = model.predict(x_test, batch_size=1024, verbose=0)
    scores = metrics.headline(y_test, probabilities)
    classes = metrics.per_class(y_test, probabilities.argmax(axis=1))
    metrics.write_reports(out_dir, name, x_test, y_test, probabilities, scores, classes)
    return scores, classes


class RunChoice(NamedTuple):
    run_id: str | None  # the run to log into; None: open a new one
    new: bool  # not the training run: it gets the training params, the run tags and the model as an input
    warn: bool  # the training run is not in the store and nothing launched this one: say so


def choose_run(recorded: str | None, recorded_exists: bool, launched: str | None) -> RunChoice:
    """Which run the evaluation goes into, from the training run's id in models/<model>/ (`recorded`),
    whether the store holds that run, and the run `mlflow run` opened for this command (`launched`,
    its MLFLOW_RUN_ID). The training run when the store holds it and nothing else was launched;
    else the launched run; else a new one (trained against another store, restored from DVC's cache)."""
    if recorded and recorded_exists and launched in (None, recorded):
        return RunChoice(recorded, new=False, warn=False)
    if launched:
        return RunChoice(launched, new=True, warn=False)
    return RunChoice(None, new=True, warn=True)


def log_evaluation(run_id: str, test: tuple[np.ndarray, np.ndarray], test_file: Path, model_id: str | None,
                   scores: dict[str, float], classes: pd.DataFrame, reports: EvalReports) -> None:
    """Into the active run: the test set as an input, the scores, and the reports as artifacts."""
    if os.environ.get("DVC_STAGE"):
        mlflow.set_tag("dvc.eval_stage", os.environ["DVC_STAGE"])
    test_set = tracking.log_dataset(*test, test_file, "mnist-test", "test")
    # The headline scores also belong to the logged model, measured on the test set: the Models
    # tab shows and sorts by them. Per-class scores stay with the run, where they fit.
    tracking.log_metrics(run_id, metrics.headline_names(scores), model_id=model_id, dataset=test_set)
    tracking.log_metrics(run_id, metrics.per_class_names(classes))
    for artifact in (reports.metrics, reports.per_class, reports.confusion_png, reports.confusion_csv,
                     reports.classification_report, reports.misclassified):
        mlflow.log_artifact(str(artifact), artifact_path="evaluation")
