"""The evaluate stage: test-set metrics, written for DVC and logged to the MLflow run that
trained the model, so the compare view shows params and test metrics side by side."""

import logging
import os

import mlflow

from mnist_pipeline import metrics, registry, tracking
from mnist_pipeline.atomic import check_writable
from mnist_pipeline.config import Params
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.keras_file import load_keras, restore_fix
from mnist_pipeline.layout import MODEL_FILE, Layout
from mnist_pipeline.splits import load_split

log = logging.getLogger(__name__)


def evaluate(name: str, params: Params, layout: Layout) -> dict[str, float]:
    """Evaluate model `name` on the test set; log into its training run; return the headline scores."""
    model_dir = layout.model_dir(name)
    if not (model_dir / MODEL_FILE).is_file():
        raise PipelineError(f"{model_dir / MODEL_FILE} is missing; run its train stage first (dvc repro train@{name})")
    out_dir = layout.eval_dir(name)
    check_writable(out_dir.parent)
    x_test, y_test = load_split(layout.processed, "test")
    model = load_keras(model_dir / MODEL_FILE, restore_fix(model_dir))
    probabilities = model.predict(x_test, batch_size=1024, verbose=0)
    scores = metrics.headline(y_test, probabilities)
    classes = metrics.per_class(y_test, probabilities.argmax(axis=1))
    metrics.write_reports(out_dir, name, x_test, y_test, probabilities, scores, classes)
    accuracy = scores["accuracy"]

    run_id = tracking.read_run_id(model_dir)
    # Under `mlflow run -e evaluate`, MLflow has opened a run of its own: the evaluation goes there.
    launched_run = os.environ.get("MLFLOW_RUN_ID")
    tracking.use_experiment(params.mlflow.experiment, layout.root)
    model_run = run_id if run_id and tracking.run_exists(run_id) else None
    # The logged model lives in the store only when its run does.
    model_id = tracking.read_model_id(model_dir) if model_run else None
    resume = model_run is not None and launched_run in (None, model_run)
    if resume:
        run = tracking.active_run(run_id=run_id)
    else:  # trained against another store, restored from DVC's cache, or launched by `mlflow run`
        if not launched_run:
            log.warning("training run %s is not in %s; logging the evaluation as a new run", run_id,
                        tracking.tracking_uri(layout.root))
        tags = tracking.run_tags(name, layout.root) | {"training_run_id": str(run_id)}
        run = tracking.active_run(run_name=tracking.run_name(name), tags=tags)
    with run as active:
        if not resume:
            tracking.log_params({"model": name} | params.model(name).model_dump())
        if os.environ.get("DVC_STAGE"):
            mlflow.set_tag("dvc.eval_stage", os.environ["DVC_STAGE"])
        test_set = tracking.log_dataset(x_test, y_test, layout.processed / "test.npz", "mnist-test", "test")
        if model_id and not resume:  # this run evaluates a model another run logged
            tracking.log_model_input(active.info.run_id, model_id)
        # The headline scores also belong to the logged model, measured on the test set: the Models
        # tab shows and sorts by them. Per-class scores stay with the run, where they fit.
        tracking.log_metrics(active.info.run_id, metrics.headline_names(scores), model_id=model_id, dataset=test_set)
        tracking.log_metrics(active.info.run_id, metrics.per_class_names(classes))
        for artifact in ("metrics.json", "per_class.csv", "confusion_matrix.png", "confusion_matrix.csv",
                         "classification_report.txt", "misclassified.png"):
            mlflow.log_artifact(str(out_dir / artifact), artifact_path="evaluation")
    if model_id:
        registry.promote(params.registry, name, model_id, accuracy)
    elif params.registry.enabled:
        why = (f"{model_dir / tracking.RUN_FILE} names no logged model (an older version trained it); "
               f"retrain it: dvc repro -f train@{name}"
               if model_run else "the run that logged the model is not in this tracking store")
        log.warning("%s: not registered: %s", name, why)
    log.info("%s: test accuracy %.4f, macro F1 %.4f", name, accuracy, scores["f1"])
    return scores
