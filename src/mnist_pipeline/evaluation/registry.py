"""The model registry: each model family (a key under `models`) has one `champion`, the
registered version with the best test accuracy so far; `predict` and `mlflow models serve`
load it as models:/<name>@champion."""

import logging

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import RegistryParams

log = logging.getLogger(__name__)
ALIAS = "champion"
ACCURACY_TAG = "test_accuracy"


def registered_name(params: RegistryParams, model: str) -> str:
    return f"{params.name_prefix}{model}"


def champion_accuracy(client: MlflowClient, name: str) -> float | None:
    """The test accuracy of the current champion, or None when the family has none yet."""
    try:
        version = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:  # no such registered model, or no version holds the alias
        return None
    return float(version.tags.get(ACCURACY_TAG, "nan"))


def promote(params: RegistryParams, model: str, model_id: str, accuracy: float, run_id: str) -> str | None:
    """Register the logged model `model_id` (`m-…`) and make it champion if it beats the current one;
    return the version. `accuracy` is the test accuracy of model `model` trained by run `run_id`: the
    logged model must be that one, never another model's under these numbers."""
    if not params.enabled:
        return None
    name = registered_name(params, model)
    client = MlflowClient()
    logged = client.get_logged_model(model_id)
    if (logged.name, logged.source_run_id) != (model, run_id):
        raise PipelineError(
            f"logged model {model_id} is model {logged.name!r} of run {logged.source_run_id}, not "
            f"{model!r} of run {run_id}: not registered as {name} under that run's test accuracy"
        )
    if accuracy < params.min_accuracy:
        log.info(
            "%s: test accuracy %.4f is below registry.min_accuracy %.4f; not registered",
            model,
            accuracy,
            params.min_accuracy,
        )
        return None
    best = champion_accuracy(client, name)
    # `not best >= accuracy` rather than `accuracy > best`: a champion without the tag (NaN) loses.
    if best is not None and best >= accuracy:
        log.info(
            "%s: test accuracy %.4f does not beat %s@%s (%.4f); not registered", model, accuracy, name, ALIAS, best
        )
        return None
    # From the logged model itself: MLflow records its run as the version's source run. (A runs:/
    # URI makes MLflow look for run artifacts, find none, and warn before it falls back to this.)
    version = mlflow.register_model(f"models:/{model_id}", name, tags={ACCURACY_TAG: str(accuracy)})
    client.set_registered_model_alias(name, ALIAS, version.version)
    log.info(
        "%s: registered %s version %s as @%s (test accuracy %.4f, was %s)",
        model,
        name,
        version.version,
        ALIAS,
        accuracy,
        "none" if best is None else f"{best:.4f}",
    )
    return version.version
