"""The model registry: each model family (a key under `models`) has one `champion`, the
registered version with the best test accuracy so far; `predict` and `mlflow models serve`
load it as models:/<name>@champion."""

import logging
import math

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.errors import PipelineError, first_line
from mnist_pipeline.core.params import RegistryParams

log = logging.getLogger(__name__)
ALIAS = "champion"
ACCURACY_TAG = "test_accuracy"
# Reads and moves of the alias before settle_champion gives up. Each promotion running at the same
# time can cost another; two at once settle in one or two.
SETTLE_TRIES = 20


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
    champion = settle_champion(client, name)
    if champion is not None and str(champion.version) != str(version.version):
        log.info(
            "%s: registered %s version %s (test accuracy %.4f), but version %s (test accuracy %s), "
            "registered at the same time, beats it and holds @%s",
            model,
            name,
            version.version,
            accuracy,
            champion.version,
            champion.tags.get(ACCURACY_TAG),
            ALIAS,
        )
        return version.version
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


def settle_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """Point @champion at the family's best version (the highest test accuracy; of equals, the first
    registered) and return it; None when no version has a test accuracy.

    MLflow has no compare-and-set for an alias: set_registered_model_alias overwrites whatever the
    alias holds (two first sets at once even collide on its key, and one fails), and the model
    registry offers no lock. So a promoter that has registered its version reads the versions and
    the alias again after each set, until a read finds the alias on the best. The last set to the
    alias is then always right: its promoter read again after it and found it on the best version
    registered by then, and a better version registered after that read has a promoter of its own,
    whose reads come later still, see the same alias and would have set it again. That needs only
    that a read sees every write that returned before it: one SQLite file, PostgreSQL (each MLflow
    call commits before it returns) and any `mlflow server` in front of either give that."""
    error = None
    for _ in range(SETTLE_TRIES):
        best = best_version(client, name)
        if best is None:
            return None
        if str(client.get_registered_model(name).aliases.get(ALIAS)) == str(best.version):
            return best
        try:
            client.set_registered_model_alias(name, ALIAS, best.version)
        except MlflowException as exc:  # another promoter's first set won the insert: read again
            error = exc
    why = f": {first_line(error)}" if error else ""
    raise PipelineError(
        f"{name}@{ALIAS} was still moving after {SETTLE_TRIES} tries{why}; run the evaluate stage again "
        f"once the other promotions have ended"
    )


def best_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version of `name` with the highest test accuracy tag; of equals, the first registered."""
    scored = []
    for version in client.search_model_versions(f"name = '{name}'"):
        try:
            accuracy = float(version.tags.get(ACCURACY_TAG, "nan"))
        except ValueError:
            continue
        if not math.isnan(accuracy):
            scored.append((accuracy, -int(version.version), version))
    return max(scored, key=lambda s: s[:2])[2] if scored else None
