"""What a run records: its name and tags (model, DVC stage and experiment, git commit), its params,
its metrics in one call per step, and its datasets with their digests."""

import hashlib
import json
import os
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
from mlflow.data.numpy_dataset import from_numpy
from mlflow.entities import LoggedModelInput, Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.params import LogisticParams, Params
from mnist_pipeline.tracking.git import git_dirty, git_output


def run_name(model: str) -> str:
    """Explicit names: MLflow's generated ones come from `random`, which the seed makes repeat."""
    exp = os.environ.get("DVC_EXP_NAME")
    return f"{model}-{exp}" if exp else f"{model}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def run_tags(model: str, root: Path) -> dict[str, str]:
    tags = {"model": model}
    for env, tag in (
        ("DVC_STAGE", "dvc.stage"),
        ("DVC_EXP_NAME", "dvc.exp_name"),
        ("DVC_EXP_BASELINE_REV", "dvc.exp_baseline_rev"),
    ):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    commit = git_output(root, "rev-parse", "HEAD")
    if commit:
        tags["git.commit"] = commit
        tags["git.dirty"] = str(git_dirty(root)).lower()
    return tags


# A logistic regression is an MLP without hidden layers: logged in the MLP's terms, so that the two
# models' runs line up param by param (MLflow's compare view shows a param a run lacks as "unknown").
NO_HIDDEN_LAYERS = {"hidden_units": [], "activation": "none", "dropout": 0.0}


def training_params(model: str, params: Params) -> dict:
    """The params of a training run: the model's key, its params, and the data's as data.*. An
    evaluation that opens a run of its own logs the same, so its run lines up with training runs."""
    data = {f"data.{key}": value for key, value in params.data.model_dump().items()}
    model_params = params.model(model)
    architecture = NO_HIDDEN_LAYERS if isinstance(model_params, LogisticParams) else {}
    return {"model": model} | architecture | _dotted(model_params.model_dump()) | data


def _dotted(params: dict) -> dict:
    """A block of keys (augmentation) as one param per key, named by its path as in `dvc exp show`
    (augmentation.rotation): compare and MLflow's compare view then show the one that differs."""
    flat: dict = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat |= {f"{key}.{inner}": inner_value for inner, inner_value in value.items()}
        else:
            flat[key] = value
    return flat


def log_training_inputs(
    name: str,
    params: Params,
    dtype: str,
    processed: Path,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
) -> None:
    """What a training run (the train stage's, or a tuning trial's) records before its fit: the
    params, the compute dtype `precision: auto` chose on this machine, and its two datasets."""
    log_params(training_params(name, params))
    mlflow.set_tag("compute_dtype", dtype)
    log_dataset(*train, processed / "train.npz", "mnist-train", "training")
    log_dataset(*validation, processed / "validation.npz", "mnist-validation", "validation")


def log_params(params: dict) -> None:
    """Log into the active run the params it does not hold yet.

    `mlflow run -P epochs=2` logs the user's spelling before the command starts; MLflow refuses
    a second value for a key, even "0.01" after "1e-2".
    """
    run = mlflow.active_run()
    assert run is not None  # called inside the run it logs into
    logged = MlflowClient().get_run(run.info.run_id).data.params
    mlflow.log_params({key: _param_value(value) for key, value in params.items() if key not in logged})


def _param_value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def log_metrics(
    run_id: str, metrics: dict[str, float], step: int = 0, model_id: str | None = None, dataset=None
) -> None:
    """All metrics of one step in a single call: one round trip to a remote server, not one each.

    With `model_id` and `dataset` (an mlflow.data Dataset the run logged as an input) the metrics
    also belong to that logged model, measured on that dataset: the experiment's Models tab shows them.
    """
    now = int(time.time() * 1000)
    on = {"dataset_name": dataset.name, "dataset_digest": dataset.digest} if dataset is not None else {}
    batch = [Metric(key, float(value), now, step, model_id=model_id, **on) for key, value in metrics.items()]
    MlflowClient().log_batch(run_id, metrics=batch, synchronous=True)


def log_model_input(run_id: str, model_id: str) -> None:
    """Record that the run used a logged model it did not log (lineage in the UI)."""
    MlflowClient().log_inputs(run_id, models=[LoggedModelInput(model_id)])


def digest(x: np.ndarray, y: np.ndarray) -> str:
    # numpy's stubs give ndarray the buffer protocol (__buffer__) on Python >= 3.12 only.
    h = hashlib.sha256(memoryview(np.ascontiguousarray(x)).cast("B"))  # type: ignore[arg-type]
    h.update(memoryview(np.ascontiguousarray(y)).cast("B"))  # type: ignore[arg-type]
    return h.hexdigest()[:16]


def log_dataset(x, y, source: Path, name: str, context: str) -> mlflow.data.dataset.Dataset:
    with warnings.catch_warnings():
        # MLflow registers local files under two schemes and warns that it picked one of them.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = from_numpy(x, targets=y, source=str(source), name=name, digest=digest(x, y))
    try:
        mlflow.log_input(dataset, context=context)
    except MlflowException as exc:
        # Runs that log the same new dataset at once (queue workers) race to insert it, and the store's
        # unique key on (experiment, name, digest) fails the loser; its second try finds the row and links it.
        if "unique constraint" not in str(exc).lower():
            raise
        mlflow.log_input(dataset, context=context)
    return dataset
