"""The evaluate stage: test-set metrics, written for DVC and logged to the MLflow run that
trained the model, so the compare view shows params and test metrics side by side."""

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.atomic import check_writable
from mnist_pipeline.core.errors import PipelineError, interrupt
from mnist_pipeline.core.layout import EvalReports, Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.evaluation import lineage, registry, scoring
from mnist_pipeline.evaluation.gates import Scores
from mnist_pipeline.evaluation.keras_file import load_keras, restore_fix
from mnist_pipeline.evaluation.lineage import Evidence
from mnist_pipeline.tracking.liveness import active_run
from mnist_pipeline.tracking.run_file import MODEL_DIGEST_TAG, file_sha256, read_run_file
from mnist_pipeline.tracking.runs import (
    log_dataset,
    log_metrics,
    log_model_input,
    log_params,
    run_name,
    run_tags,
    training_params,
)
from mnist_pipeline.tracking.store import tracking_uri, use_experiment

log = logging.getLogger(__name__)


def evaluate(name: str, params: Params, layout: Layout, *, exits_after: bool = False) -> dict[str, float]:
    """Evaluate model `name` on the test set; log into its training run; return the headline scores.

    Into the run its run file names only when that run trained this very file (its model tag,
    experiment and model digest; see `mismatch`): otherwise it refuses before writing anything.
    The registry comes last, once every report is written and the run has ended, and an interrupt
    does not cut it short (see `interrupts_held`); `exits_after`: the caller's process ends when this
    returns (the evaluate stage).
    """
    model_file, model_dir = layout.model_file(name), layout.model_dir(name)
    if not model_file.is_file():
        raise PipelineError(f"{model_file} is missing; run its train stage first (dvc repro train@{name})")
    reports = layout.eval_reports(name)
    check_writable(reports.folder.parent)
    # A damaged run file or model stops us before any report is written, and so does a run that is not this training's.
    ids = read_run_file(model_dir)
    run_file = RunFile(ids.get("run_id"), ids.get("model_id"), ids.get("model_sha256"))
    x_test, y_test = load_split(layout.processed, "test")
    model = load_keras(model_file, restore_fix(model_dir))
    experiment_id = use_experiment(params.mlflow.experiment, layout.root)
    recorded = recorded_run(run_file)
    # Under `mlflow run -e evaluate`, MLflow has opened a run of its own and names it in MLFLOW_RUN_ID.
    choice = choose_run(run_file.run_id, recorded is not None, os.environ.get("MLFLOW_RUN_ID"))
    problem = mismatch(name, file_sha256(model_file), run_file, recorded, experiment_id, logs_into_it=not choice.new)
    if problem:
        restore = f"{model_dir.parent.name}/{model_dir.name}"
        raise PipelineError(
            f"{layout.run_file(name)}: {problem}; nothing was logged: restore the folder with "
            f"`dvc checkout {restore}` or retrain it with `dvc repro -f train@{name}`"
        )
    # The logged model lives in the store only when its run does.
    model_id = run_file.model_id if recorded else None
    scores, classes = score(model, name, x_test, y_test, reports.folder)

    if choice.warn:
        log.warning(
            "training run %s is not in %s; logging the evaluation as a new run",
            run_file.run_id,
            tracking_uri(layout.root),
        )
    if choice.new:
        tags = run_tags(name, layout.root) | {"training_run_id": str(run_file.run_id)}
        run = active_run(run_id=choice.run_id, run_name=run_name(name), tags=tags)
    else:
        run = active_run(run_id=choice.run_id)
    with run as active:
        if choice.new:  # the params of a training run, so that this run lines up with those
            log_params(training_params(name, params))
            if model_id:  # it evaluates a model another run logged
                log_model_input(active.info.run_id, model_id)
        log_evaluation(
            active.info.run_id, (x_test, y_test), layout.processed / "test.npz", model_id, scores, classes, reports
        )
    with interrupts_held(until_exit=exits_after):
        if model_id:
            assert run_file.run_id is not None  # model_id is kept only when the store holds the run file's run
            candidate = Scores.from_rows(scores["accuracy"], classes.to_dict("records"))
            registry.promote(
                params.registry, name, model_id, candidate, run_file.run_id, card_evidence(name, layout, reports)
            )
        elif params.registry.enabled:
            why = (
                f"{layout.run_file(name)} names no logged model (its training did not log one); "
                f"retrain it: dvc repro -f train@{name}"
                if recorded
                else "the run that logged the model is not in this tracking store"
            )
            log.warning("%s: not registered: %s", name, why)
        log.info("%s: test accuracy %.4f, macro F1 %.4f", name, scores["accuracy"], scores["f1"])
    return scores


@contextmanager
def interrupts_held(until_exit: bool) -> Iterator[None]:
    """The registry step, the stage's last act, runs to its end: the first SIGINT or SIGTERM in the
    block is noted, said, and acted on by ending as done; a second stops it at once, as before.

    Cut short, a promotion would leave the registry changed (a version registered, perhaps the alias
    moved) under a stage that DVC records as failed (issue 22). Every output is written before the
    block, so a stage that completes it is complete. `until_exit`: the process ends once the caller
    returns, so the signals stay ignored after the block: there is nothing left to stop, and an
    interrupt in the interpreter's shutdown would only print `Exception ignored in threading._shutdown`.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        yield
        return
    held: list[int] = []

    def hold(signum, frame):
        if held:
            raise interrupt(signum)
        held.append(signum)
        log.warning(
            "%s came while the registry was being updated: the stage finishes first and ends as done "
            "(a second one stops it at once)",
            signal.Signals(signum).name,
        )

    previous = {signum: signal.signal(signum, hold) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if until_exit else handler)


def card_evidence(name: str, layout: Layout, reports: EvalReports) -> Evidence:
    """What the model card takes from this evaluation: the confusion matrix it wrote, and DVC's md5
    of the stage's data inputs, named as dvc.yaml names them."""
    matrix = pd.read_csv(reports.confusion_csv, index_col=0).to_numpy()
    inputs = [layout.processed, layout.model_dir(name)]
    return lineage.evidence(matrix, {path.relative_to(layout.root).as_posix(): path for path in inputs})


class RunFile(NamedTuple):
    """What models/<model>/mlflow_run.json records of the training that wrote the folder."""

    run_id: str | None
    model_id: str | None = None  # the model it logged (`m-…`)
    model_sha256: str | None = None  # of the model.keras it saved


class Recorded(NamedTuple):
    """What the store holds of the run a run file names, and of the model it says that run logged."""

    model: str | None  # the run's `model` tag
    experiment_id: str
    model_sha256: str | None  # the run's model.sha256 tag
    logged_model: tuple[str, str | None] | None  # that model's name and the run that logged it; None: not in the store


def recorded_run(run_file: RunFile) -> Recorded | None:
    """The store's record of the run the run file names; None when the store does not hold that run."""
    if not run_file.run_id:
        return None
    client = MlflowClient()
    try:
        run = client.get_run(run_file.run_id)
    except MlflowException:
        return None
    logged_model = None
    if run_file.model_id:
        try:
            found = client.get_logged_model(run_file.model_id)
            logged_model = (found.name, found.source_run_id)
        except MlflowException:
            pass
    return Recorded(
        run.data.tags.get("model"), run.info.experiment_id, run.data.tags.get(MODEL_DIGEST_TAG), logged_model
    )


def mismatch(
    name: str, file_sha256: str, run_file: RunFile, recorded: Recorded | None, experiment_id: str, logs_into_it: bool
) -> str | None:
    """Why the run file's run is not the training of this model file, or None when it is.

    The evaluation of one model must never land in another's run (the issue: a run file naming the
    logistic run put the MLP's scores there, and the registry promoted the logistic model under
    them). A run not in this store (`recorded` None) is checked against the run file only; the
    experiment matters only when the evaluation goes into that run (`logs_into_it`)."""
    if not run_file.run_id:
        return None  # no run file: evaluated into a new run, and nothing is registered
    run = f"it names run {run_file.run_id}"
    if recorded is not None and recorded.model != name:
        return f"{run}, which trained model {recorded.model!r}, not {name!r}"
    if recorded is not None and logs_into_it and recorded.experiment_id != experiment_id:
        return f"{run}, of experiment {recorded.experiment_id}, not of this one ({experiment_id})"
    if not run_file.model_sha256:
        return "it records no digest of the model (an older version wrote it), so its run cannot be checked"
    if run_file.model_sha256 != file_sha256:
        return (
            f"the model.keras beside it is not the one it records (sha256 {file_sha256[:12]}…, recorded "
            f"{run_file.model_sha256[:12]}…)"
        )
    if recorded is None:
        return None  # trained against another store: evaluated into a new run, and nothing is registered
    if recorded.model_sha256 is None:
        return f"{run}, which records no digest of its model (its training did not finish logging)"
    if recorded.model_sha256 != file_sha256:
        return (
            f"{run}, which saved another model.keras (sha256 {recorded.model_sha256[:12]}…, this one "
            f"{file_sha256[:12]}…)"
        )
    if run_file.model_id and recorded.logged_model != (name, run_file.run_id):
        logged = (
            f"model {recorded.logged_model[0]!r} of run {recorded.logged_model[1]}"
            if recorded.logged_model
            else "not in the store"
        )
        return f"{run} and logged model {run_file.model_id}, which is {logged}"
    return None


def score(
    model, name: str, x_test: np.ndarray, y_test: np.ndarray, out_dir: Path
) -> tuple[dict[str, float], pd.DataFrame]:
    """Predict the test images, score the predictions, and write the reports into `out_dir`;
    return the headline scores and the per-class table. No MLflow here."""
    probabilities = model.predict(x_test, batch_size=1024, verbose=0)
    scores = scoring.headline(y_test, probabilities)
    classes = scoring.per_class(y_test, probabilities.argmax(axis=1))
    scoring.write_reports(out_dir, name, x_test, y_test, probabilities, scores, classes)
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


def log_evaluation(
    run_id: str,
    test: tuple[np.ndarray, np.ndarray],
    test_file: Path,
    model_id: str | None,
    scores: dict[str, float],
    classes: pd.DataFrame,
    reports: EvalReports,
) -> None:
    """Into the active run: the test set as an input, the scores, and the reports as artifacts."""
    if os.environ.get("DVC_STAGE"):
        mlflow.set_tag("dvc.eval_stage", os.environ["DVC_STAGE"])
    test_set = log_dataset(*test, test_file, "mnist-test", "test")
    # The headline scores also belong to the logged model, measured on the test set: the Models
    # tab shows and sorts by them. Per-class scores stay with the run, where they fit.
    log_metrics(run_id, scoring.headline_names(scores), model_id=model_id, dataset=test_set)
    log_metrics(run_id, scoring.per_class_names(classes))
    for artifact in (
        reports.metrics,
        reports.per_class,
        reports.confusion_png,
        reports.confusion_csv,
        reports.classification_report,
        reports.misclassified,
    ):
        mlflow.log_artifact(str(artifact), artifact_path="evaluation")
