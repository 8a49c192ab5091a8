"""The model registry: each model family (a key under `models`) has one `champion`, the
registered version with the best test accuracy so far; `predict` and `mlflow models serve`
load it as models:/<name>@champion. A model is registered only when it passes the gates of
evaluation/gates.py against the champion, and each version carries its model card."""

import logging
import math

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.errors import PipelineError, first_line
from mnist_pipeline.core.params import RegistryParams
from mnist_pipeline.evaluation import gates, lineage, model_card
from mnist_pipeline.evaluation.gates import DIGITS, Scores
from mnist_pipeline.evaluation.lineage import Evidence

log = logging.getLogger(__name__)
ALIAS = "champion"
ACCURACY_TAG = "test_accuracy"
# Each digit's test precision and recall, digits 0 to 9, space-separated: the next promotion's
# digit gate reads the champion's here.
PRECISION_TAG, RECALL_TAG = "test_precision_by_digit", "test_recall_by_digit"
CARD_FILE = "model_card.md"  # the card as an artifact of the training run
# Reads and moves of the alias before settle_champion gives up. Each promotion running at the same
# time can cost another; two at once settle in one or two.
SETTLE_TRIES = 20


def registered_name(params: RegistryParams, model: str) -> str:
    return f"{params.name_prefix}{model}"


def champion_scores(client: MlflowClient, name: str) -> tuple[str, Scores] | None:
    """The current champion's version and scores, or None when the family has none yet. Per-digit
    scores from the version's tags, else from its training run's metrics (versions registered
    before the tags were), else none: the digit gate then compares nothing."""
    try:
        version = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:  # no such registered model, or no version holds the alias
        return None
    accuracy = _number(version.tags.get(ACCURACY_TAG))
    per_digit = [_numbers(version.tags.get(tag)) for tag in (PRECISION_TAG, RECALL_TAG)]
    if not all(len(scores) == len(DIGITS) for scores in per_digit):
        try:
            metrics = client.get_run(str(version.run_id)).data.metrics
            per_digit = [[metrics[f"{score}_{d}"] for d in DIGITS] for score in ("precision", "recall")]
        except (MlflowException, KeyError):
            per_digit = [[], []]
    return str(version.version), Scores(accuracy, tuple(per_digit[0]), tuple(per_digit[1]))


def _number(text: str | None) -> float:
    try:
        return float(text if text is not None else "nan")
    except ValueError:
        return math.nan


def _numbers(text: str | None) -> list[float]:
    """A per-digit tag's ten numbers; [] when it is missing or not ten numbers."""
    values = [_number(part) for part in (text or "").split()]
    return values if len(values) == len(DIGITS) and not any(map(math.isnan, values)) else []


def promote(
    params: RegistryParams, model: str, model_id: str, scores: Scores, run_id: str, evidence: Evidence | None = None
) -> str | None:
    """Register the logged model `model_id` (`m-…`) if it passes every gate against the current
    champion (evaluation/gates.py), with its model card as the version's description, and make the
    family's best version champion; return the version. `scores` are the test scores of model
    `model` trained by run `run_id`: the logged model must be that one, never another model's under
    these numbers. `evidence`: what the evaluation knows for the card (confusions, DVC's hashes)."""
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
    champion = champion_scores(client, name)
    # A version that fails a gate is never registered, so best_version, which settles the alias by
    # accuracy among the registered, can never pick it.
    if failures := gates.judge(scores, champion[1] if champion else None, params):
        against = (
            f"against {name}@{ALIAS}, version {champion[0]}: test accuracy {champion[1].accuracy:.4f} → "
            f"{scores.accuracy:.4f}"
            if champion
            else "no champion yet"
        )
        log.info("%s: not registered: %s (%s)", model, gates.summary(failures), against)
        return None
    # From the logged model itself: MLflow records its run as the version's source run. (A runs:/
    # URI makes MLflow look for run artifacts, find none, and warn before it falls back to this.)
    tags = {ACCURACY_TAG: str(scores.accuracy)}
    if scores.per_digit:
        tags |= {PRECISION_TAG: _joined(scores.precision), RECALL_TAG: _joined(scores.recall)}
    version = mlflow.register_model(f"models:/{model_id}", name, tags=tags)
    describe(client, name, str(version.version), model, model_id, run_id, scores, champion, evidence)
    settled = settle_champion(client, name)
    if settled is not None and str(settled.version) != str(version.version):
        log.info(
            "%s: registered %s version %s (test accuracy %.4f), but version %s (test accuracy %s), "
            "registered at the same time, beats it and holds @%s",
            model,
            name,
            version.version,
            scores.accuracy,
            settled.version,
            settled.tags.get(ACCURACY_TAG),
            ALIAS,
        )
        return version.version
    log.info(
        "%s: registered %s version %s as @%s (test accuracy %.4f, was %s)",
        model,
        name,
        version.version,
        ALIAS,
        scores.accuracy,
        "none" if champion is None else f"{champion[1].accuracy:.4f}",
    )
    return version.version


def _joined(values: tuple[float, ...]) -> str:
    return " ".join(f"{value:.4f}" for value in values)


def describe(
    client: MlflowClient,
    name: str,
    version: str,
    model: str,
    model_id: str,
    run_id: str,
    scores: Scores,
    champion: tuple[str, Scores] | None,
    evidence: Evidence | None,
) -> str:
    """Write the version's model card: its description in the registry, and `model_card.md` in its
    training run. Return the card."""
    evidence = evidence or Evidence()
    record = lineage.training_record(client, run_id)
    split = record.pop("split", {}) | ({"test": evidence.test_images} if evidence.test_images else {})
    card = model_card.model_card(
        model_card.Card(
            name=name,
            version=version,
            model=model,
            model_id=model_id,
            run_id=run_id,
            scores=scores,
            champion=champion,
            confusions=evidence.confusions,
            inputs_md5=evidence.inputs_md5,
            split=split,
            **record,
        )
    )
    client.update_model_version(name, version, description=card)
    client.log_text(run_id, card, CARD_FILE)
    return card


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
