"""MLflow plumbing: which store, which experiment, and the tags that tie a run to code and data."""

import hashlib
import json
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from unittest.mock import patch

import mlflow
import numpy as np
from filelock import FileLock
from mlflow.entities import LoggedModelInput, Metric, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.atomic import check_writable, write_text
from mnist_pipeline.config import Params
from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.layout import RUN_FILE

log = logging.getLogger(__name__)

# MLflow 3's mark of a model-training experiment (the UI's value; mlflow.utils.mlflow_tags has no constant).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
SQLITE_BUSY_TIMEOUT_S = 60
# One quick try instead of MLflow's minutes of retries: for the reachability check, and once the store is down.
_FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
# The digest of the model.keras a training run saved, as a tag of the run and in its run file: evaluation
# logs into the run, and the registry registers its model, only for that very file.
MODEL_DIGEST_TAG = "model.sha256"


def store_error(exc: BaseException) -> str:
    """Why a call to the store failed, short: the network's own error (`[Errno 111] Connection refused`,
    `timed out`) found in the exceptions that MLflow, requests and urllib3 wrap around it, rather than
    their page of URLs; else the error's first line."""
    found, queue, seen = None, [exc], set()
    while queue:
        error = queue.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and not type(error).__module__.startswith(("mlflow", "requests", "urllib3")):
            found = error  # the socket's or http.client's own, not one of the wrappers
        inner = (error.__cause__, error.__context__, getattr(error, "reason", None), *error.args)
        queue += [e for e in inner if isinstance(e, BaseException)]
    return str(found) if found is not None and str(found) else first_line(exc)[:300]


def fail_fast():
    """While in this context, each call to a tracking server makes one try with a 10 s timeout, not
    minutes of retries: MLflow reads these variables at every request (mlflow/utils/rest_utils.py).
    They are the process's: use it where no other thread needs the usual retries."""
    return patch.dict(os.environ, _FAIL_FAST)


def tracking_uri(root: Path) -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite file at the repository root.

    DVC sets DVC_ROOT to the main repository even for queued experiments, which run in a
    temporary copy; their runs must land in the same store as everyone else's. The busy
    timeout lets parallel workers queue for SQLite's single writer instead of failing
    with "database is locked" after the default 5 s.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{store_root(root) / 'mlflow.db'}?timeout={SQLITE_BUSY_TIMEOUT_S}"


def check_store(root: Path) -> None:
    """Fail in seconds, before any training, when the tracking store cannot be used.

    MLflow's HTTP client otherwise retries an unreachable server for minutes. For a new
    SQLite file, the first process creates the tables while the others wait on a file
    lock: creating them concurrently fails.
    """
    uri = tracking_uri(root)
    fix = "start the server or correct MLFLOW_TRACKING_URI (unset it to use the local sqlite store)"
    lock = nullcontext()
    if uri.startswith("sqlite:///"):
        db_file = Path(uri.removeprefix("sqlite:///").split("?")[0])
        try:
            check_writable(db_file.parent)
        except OSError:
            raise PipelineError(
                f"cannot write the MLflow store {db_file}: folder {db_file.parent} is read-only; "
                "fix its permissions or set MLFLOW_TRACKING_URI to a writable location"
            ) from None
        lock = FileLock(f"{db_file}.lock")
        fix = "check that the file is an MLflow database, or move it aside to start a new one"
    try:
        # patch.dict sets the variables for this call only and restores them after.
        with lock, patch.dict(os.environ, _FAIL_FAST):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # whatever the store's client raises, the user's fix is the same
        raise PipelineError(f"cannot use the MLflow tracking store {uri}: {first_line(exc)[:500]}; fix: {fix}") from None


def store_root(root: Path) -> Path:
    return Path(os.environ.get("DVC_ROOT") or root).resolve()


def use_experiment(name: str, root: Path) -> str:
    """Point MLflow at the store and experiment; return the experiment id.

    `mlflow run --experiment-name X` opens its run in X and says so in MLFLOW_EXPERIMENT_ID:
    that run is resumed, so its experiment wins over params.yaml's.
    """
    mlflow.set_tracking_uri(tracking_uri(root))
    experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if experiment_id:
        mark_model_training(MlflowClient(), experiment_id)
    else:
        experiment_id = ensure_experiment(name, root)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def ensure_experiment(name: str, root: Path) -> str:
    """The id of experiment `name` in the project's store, created (marked as model training) if missing."""
    uri = tracking_uri(root)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # Keep a local store's artifacts beside its database, not wherever the command ran.
        location = (store_root(root) / "mlruns").as_uri() if uri.startswith("sqlite:") else None
        try:
            return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        except MlflowException:  # another process created it first
            experiment = client.get_experiment_by_name(name)
    mark_model_training(client, experiment.experiment_id)
    return experiment.experiment_id


def mark_model_training(client: MlflowClient, experiment_id: str) -> None:
    """Tag the experiment as model training, over whatever kind the UI may have inferred. (The 3.17 UI
    opens an experiment by its GenAI / Model training switch, not by this tag: `make ui`'s link sets the switch.)"""
    tags = client.get_experiment(experiment_id).tags
    for key, value in EXPERIMENT_KIND.items():
        if tags.get(key) != value:
            client.set_experiment_tag(experiment_id, key, value)


@contextmanager
def active_run(**start_run_kwargs) -> Iterator[mlflow.ActiveRun]:
    """mlflow.start_run that never leaves a run RUNNING: KILLED on an interrupt, FAILED on an error."""
    run = mlflow.start_run(**start_run_kwargs)
    try:
        yield run
    except KeyboardInterrupt:
        _end_run_or_warn(RunStatus.KILLED)
        raise
    except BaseException:
        _end_run_or_warn(RunStatus.FAILED)
        raise
    mlflow.end_run()


def _end_run_or_warn(status: int) -> None:
    """End the active run as `status`; when the store does not answer, say so rather than let its
    error hide the one being raised."""
    run_id = mlflow.active_run().info.run_id
    try:
        mlflow.end_run(RunStatus.to_string(status))  # MLflow forgets the active run before it calls the store
    except Exception as exc:
        log.warning("could not mark run %s %s in %s (%s); it stays RUNNING there", run_id,
                    RunStatus.to_string(status), mlflow.get_tracking_uri(), store_error(exc))


def run_name(model: str) -> str:
    """Explicit names: MLflow's generated ones come from `random`, which the seed makes repeat."""
    exp = os.environ.get("DVC_EXP_NAME")
    return f"{model}-{exp}" if exp else f"{model}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


def run_tags(model: str, root: Path) -> dict[str, str]:
    tags = {"model": model}
    for env, tag in (("DVC_STAGE", "dvc.stage"), ("DVC_EXP_NAME", "dvc.exp_name"),
                     ("DVC_EXP_BASELINE_REV", "dvc.exp_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    commit = git_output(root, "rev-parse", "HEAD")
    if commit:
        tags["git.commit"] = commit
        tags["git.dirty"] = str(git_dirty(root)).lower()
    return tags


def git_dirty(root: Path) -> bool:
    """Whether tracked files differ from HEAD; dvc.lock changes as the pipeline runs, so it does
    not count."""
    return bool(git_output(root, "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)dvc.lock"))


def git_output(root: Path, *args: str) -> str | None:
    """What `git ARGS` prints in `root`, or None when git is missing or fails (not a repository)."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def training_params(model: str, params: Params) -> dict:
    """The params of a training run: the model's key, its params, and the data's as data.*. An
    evaluation that opens a run of its own logs the same, so its run lines up with training runs."""
    data = {f"data.{key}": value for key, value in params.data.model_dump().items()}
    return {"model": model} | params.model(model).model_dump() | data


def log_params(params: dict) -> None:
    """Log into the active run the params it does not hold yet.

    `mlflow run -P epochs=2` logs the user's spelling before the command starts; MLflow refuses
    a second value for a key, even "0.01" after "1e-2".
    """
    logged = MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({key: _param_value(value) for key, value in params.items() if key not in logged})


def _param_value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0, model_id: str | None = None,
                dataset=None) -> None:
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


def write_run_file(model_dir: Path, run_id: str, model_id: str | None = None, model_sha256: str | None = None) -> None:
    """The ids of the run that trained the model and of the model it logged (MLflow's `m-…`), and the
    sha256 of the model.keras it saved."""
    ids = {"run_id": run_id} | ({"model_id": model_id} if model_id else {})
    ids |= {"model_sha256": model_sha256} if model_sha256 else {}
    write_text(model_dir / RUN_FILE, json.dumps(ids) + "\n")


def read_run_id(model_dir: Path) -> str | None:
    return _read_run_file(model_dir).get("run_id")


def read_model_id(model_dir: Path) -> str | None:
    """The logged model's id; None for a folder written before it was recorded."""
    return _read_run_file(model_dir).get("model_id")


def read_model_sha256(model_dir: Path) -> str | None:
    """The sha256 of the model.keras training saved; None for a folder written before it was recorded."""
    return _read_run_file(model_dir).get("model_sha256")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_run_file(model_dir: Path) -> dict[str, str]:
    path = model_dir / RUN_FILE
    if not path.is_file():
        return {}
    try:
        ids = json.loads(path.read_text())  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        if not (isinstance(ids, dict) and all(isinstance(value, str) for value in ids.values())):
            raise ValueError("not an object of ids")
    except ValueError as exc:  # edited or damaged: DVC has the stage's copy, or training writes it again
        raise PipelineError(f"{path}: not the run file the train stage writes ({first_line(exc)}); restore it "
                            f"with `dvc checkout {model_dir.parent.name}/{model_dir.name}` or retrain with "
                            f"`dvc repro -f train@{model_dir.name}`") from None
    return ids


def digest(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256(memoryview(np.ascontiguousarray(x)).cast("B"))
    h.update(memoryview(np.ascontiguousarray(y)).cast("B"))
    return h.hexdigest()[:16]


def log_dataset(x, y, source: Path, name: str, context: str) -> mlflow.data.dataset.Dataset:
    with warnings.catch_warnings():
        # MLflow registers local files under two schemes and warns that it picked one of them.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_numpy(x, targets=y, source=str(source), name=name, digest=digest(x, y))
    mlflow.log_input(dataset, context=context)
    return dataset
