"""The train stage: fit one model from params.yaml and record the run in MLflow."""

import json
import logging
import math
import time
from contextlib import ExitStack

import keras
import mlflow
import numpy as np
import PIL
import scipy
import tensorflow as tf
from mlflow.exceptions import MlflowException

from mnist_pipeline.core.atomic import atomic_dir, atomic_file, check_writable
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.layout import MODEL_FILE, Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.data import photo
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.tracking.liveness import active_run
from mnist_pipeline.tracking.run_file import MODEL_DIGEST_TAG, file_sha256, write_run_file
from mnist_pipeline.tracking.runs import log_metrics, log_training_inputs, run_name, run_tags
from mnist_pipeline.tracking.store import fail_fast, store_error, tracking_uri, use_experiment
from mnist_pipeline.training import quiet_tf
from mnist_pipeline.training.cost import peak_rss_mb, write_cost
from mnist_pipeline.training.fit_loop import EpochMetrics, StopOnDivergence, StopOnSignal, fit, seed_everything
from mnist_pipeline.training.metric_sender import MetricSender, epochs
from mnist_pipeline.training.models import build, compute_dtype, for_inference

log = logging.getLogger(__name__)


def train(name: str, params: Params, layout: Layout) -> str:
    """Train model `name`; write its folder (model + run file) and history; return the MLflow run id.

    The outputs are written before the store is asked for anything after the fit, so a store that
    stops answering costs the run's record, never the training; the stage then says what was not
    logged and fails (fail_fast: in seconds, not after minutes of retries)."""
    model_params = params.model(name)
    check_writable(layout.model_dir(name).parent, layout.history(name).parent)
    train_set = load_split(layout.processed, "train")
    validation = load_split(layout.processed, "validation")
    use_experiment(params.mlflow.experiment, layout.root)
    seed_everything(model_params.seed)
    dtype = compute_dtype(model_params)
    model = build(model_params, math.ceil(len(train_set[1]) / model_params.batch_size), dtype)
    uri = tracking_uri(layout.root)

    # Entered before the run, so that ending the run (FAILED, KILLED) also fails fast while it holds.
    with ExitStack() as store_down, active_run(run_name=run_name(name), tags=run_tags(name, layout.root)) as run:
        run_id = run.info.run_id
        log.info("MLflow run %s (%s) in %s", run_id, run.info.run_name, uri)
        log_training_inputs(name, params, dtype, layout.processed, train_set, validation)

        store_down.enter_context(fail_fast())  # during the fit only the sender's thread calls the store
        sender, stop_on_signal = MetricSender(uri, run_id), StopOnSignal()
        epoch_metrics = EpochMetrics(sender)
        started, cpu_started = time.perf_counter(), time.process_time()
        with sender, stop_on_signal:
            fitted = fit(
                model,
                model_params,
                train_set,
                validation,
                callbacks=[stop_on_signal, StopOnDivergence(name, model_params), epoch_metrics],
            )
        fit_seconds, fit_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        cost = {"fit_seconds": fit_seconds, "fit_cpu_seconds": fit_cpu_seconds, "fit_peak_rss_mb": peak_rss_mb()}

        curves, model = fitted.curves, for_inference(model, model_params)
        # The unsure check's thresholds, measured on the validation split (docs/registry.md).
        unsure = photo.measure(validation[0], model.predict(validation[0], batch_size=1024, verbose=0), validation[1])
        with atomic_file(layout.history(name)) as tmp:
            curves.to_csv(tmp, index=False)
        with atomic_dir(layout.model_dir(name)) as tmp:
            model.save(tmp / MODEL_FILE)
            digest = file_sha256(tmp / MODEL_FILE)
            write_run_file(tmp, run_id, model_sha256=digest)
            write_cost(tmp, cost)
            (tmp / photo.THRESHOLDS_FILE).write_text(json.dumps(unsure, indent=2) + "\n")

        def incomplete(what_happened: str, not_logged: str) -> PipelineError:
            return PipelineError(
                f"MLflow run {run_id} is incomplete: {uri} {what_happened}, so {not_logged} not logged; the model is "
                f"saved in {layout.model_dir(name).relative_to(layout.root)} and its history in "
                f"{layout.history(name).relative_to(layout.root)}; fix: once the store answers, run "
                f"`dvc repro train@{name}` to train and log it again"
            )

        if sender.unsent:  # the store did not take the last try either: it is down
            raise incomplete(
                f"did not answer from epoch {sender.unsent[0]}",
                f"the metrics of {epochs(sender.unsent)}, the fit's summary and the model were",
            )
        store_down.close()  # it answered the last epoch: the usual retries for the rest

        # pandas-stubs type idxmin() as Hashable, which no overload of .loc takes; it is a row label.
        best = curves.loc[curves["val_loss"].idxmin()]  # type: ignore[call-overload]
        not_logged = ["the fit's summary", "the model"]
        try:
            log_metrics(
                run_id,
                cost  # fit_cpu_seconds over fit_seconds: how many cores training kept busy
                | {
                    "mlflow_log_seconds": epoch_metrics.seconds,
                    "epochs_trained": len(curves),
                    "best_epoch": best["epoch"],
                    "best_val_loss": best["val_loss"],
                    "best_val_accuracy": best["val_accuracy"],
                },
            )
            mlflow.set_tag(MODEL_DIGEST_TAG, digest)  # evaluation checks the file it loads against it
            not_logged.pop(0)
            model_id = log_model(model, name, validation[0][:5], unsure)
        except (MlflowException, OSError) as exc:  # the store failed after the fit, after MLflow's retries
            store_down.enter_context(fail_fast())
            raise incomplete(
                f"failed after the fit ({store_error(exc)})",
                f"{' and '.join(not_logged)} {'were' if len(not_logged) > 1 else 'was'}",
            ) from None
        write_run_file(layout.model_dir(name), run_id, model_id, digest)
    kept = curves.iloc[fitted.kept_epoch - 1]
    log.info(
        "%s: %d of %d epochs in %.1f s; kept the weights of epoch %d (%s): val_accuracy %.4f, val_loss %.4f",
        name,
        len(curves),
        model_params.epochs,
        fit_seconds,
        kept["epoch"],
        fitted.why,
        kept["val_accuracy"],
        kept["val_loss"],
    )
    return run_id


def log_model(model: keras.Model, name: str, example: np.ndarray, unsure: dict) -> str:
    """Log the model under its key in params.yaml with its signature, an input example and the
    unsure check's thresholds (which the served model reads); return
    its id (`m-…`), which evaluation links its test metrics to and the registry registers.

    mlflow.tensorflow rather than mlflow.keras: the latter fails to save an input example
    (mlflow/mlflow#16183). Pinned requirements skip MLflow's slow requirement inference.
    """
    signature = mlflow.models.infer_signature(example, model.predict(example, verbose=0))
    return quiet_tf.log_model(  # mlflow.tensorflow's, served without TensorFlow's start-up lines and progress bars
        model,
        name=name,  # the Models tab lists logged models by name: `mlp`, not MLflow's default `model`
        signature=signature,
        input_example=example,
        unsure=unsure,
        # scipy and Pillow: photo.py, shipped with the model, prepares the image files it is sent.
        pip_requirements=[
            f"keras=={keras.__version__}",
            f"tensorflow=={tf.__version__}",
            f"scipy=={scipy.__version__}",
            f"pillow=={PIL.__version__}",
        ],
    ).model_id
