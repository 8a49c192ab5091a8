"""The tracking store: which one (MLFLOW_TRACKING_URI, else the repository's SQLite file), a check
that it answers before any work, and the experiment runs go into."""

import logging
import os
import shlex
import urllib.parse
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from unittest.mock import patch

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.atomic import check_writable
from mnist_pipeline.core.errors import PipelineError, first_line
from mnist_pipeline.tracking.runs_view import set_experiment_tag, show_runs_by_test_accuracy
from mnist_pipeline.tracking.sqlite_url import sqlite_file, sqlite_url

log = logging.getLogger(__name__)


# MLflow 3's mark of a model-training experiment (the UI's value; mlflow.utils.mlflow_tags has no constant).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
SQLITE_BUSY_TIMEOUT_S = 60
# One quick try instead of MLflow's minutes of retries: for the reachability check, and once the store is down.
_FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


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
    return local_store_uri(root)


def local_store_uri(root: Path) -> str:
    return sqlite_url(store_root(root) / "mlflow.db", timeout=SQLITE_BUSY_TIMEOUT_S)


def check_store(root: Path) -> None:
    """Fail in seconds, before any training, when the tracking store cannot be used.

    MLflow's HTTP client otherwise retries an unreachable server for minutes. For a new
    SQLite file, the first process creates the tables while the others wait on a file
    lock: creating them concurrently fails.
    """
    uri = tracking_uri(root)
    fix = "start the server or correct MLFLOW_TRACKING_URI (unset it to use the local sqlite store)"
    lock: AbstractContextManager[object] = nullcontext()
    db_file = sqlite_file(uri)
    if db_file is not None:
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
        # One quick try for this call only; the usual retries after it.
        with lock, fail_fast():
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - whatever the store's client raises, the user's fix is the same
        raise PipelineError(
            f"cannot use the MLflow tracking store {uri}: {first_line(exc)[:500]}; fix: {fix}"
        ) from None


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
    check_artifact_home(experiment_id, root)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def ensure_experiment(name: str, root: Path) -> str:
    """The id of experiment `name` in the project's store, created (marked as model training, with the
    UI's view of its runs) if missing."""
    uri = tracking_uri(root)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # Keep a local store's artifacts beside its database, not wherever the command ran.
        location = (store_root(root) / "mlruns").as_uri() if sqlite_file(uri) else None
        try:
            experiment_id = client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        except MlflowException:  # another process created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:  # no: the store refused for another reason, which this error says
                raise
        else:
            show_runs_by_test_accuracy(client, experiment_id)
            return experiment_id
    mark_model_training(client, experiment.experiment_id)
    return experiment.experiment_id


def mark_model_training(client: MlflowClient, experiment_id: str) -> None:
    """Tag the experiment as model training, over whatever kind the UI may have inferred, and give it
    the UI's view of its runs by test accuracy. (The 3.17 UI opens an experiment by its GenAI / Model
    training switch, not by this tag: `make ui`'s link sets the switch.)"""
    tags = client.get_experiment(experiment_id).tags
    for key, value in EXPERIMENT_KIND.items():
        if tags.get(key) != value:
            set_experiment_tag(client, experiment_id, key, value)
    show_runs_by_test_accuracy(client, experiment_id)


def check_artifact_home(experiment_id: str, root: Path) -> None:
    """Refuse a project store whose experiment keeps its artifacts in another folder's mlruns/.

    The local store records absolute paths (MLflow resolves every local artifact location), so in
    a copy of the repository (`cp -a`) the copied experiment points at the original's mlruns/: the
    copy would write its models there, and a move of the original would break them. MLflow's API
    cannot change an experiment's artifact location, so the user picks the fix.
    """
    if tracking_uri(root) != local_store_uri(root):  # a store the user chose: its locations are theirs
        return
    location = urllib.parse.urlparse(MlflowClient().get_experiment(experiment_id).artifact_location)
    where, here = Path(urllib.parse.unquote(location.path)), store_root(root)
    if location.scheme not in ("", "file") or where.name != "mlruns" or where.resolve().is_relative_to(here):
        return
    old, how = where.parent, "copied" if where.exists() else "moved"
    anew = f"cd {_quoted(here)} && mv mlflow.db mlflow.db.{how}" + (
        f" && mv mlruns mlruns.{how}" if (here / "mlruns").exists() else ""
    )
    problem = f"the MLflow store {here / 'mlflow.db'} keeps experiment {experiment_id}'s artifacts in {where}"
    if how == "moved":
        link = f"mkdir -p {_quoted(old)} && ln -s {_quoted(here / 'mlruns')} {_quoted(where)}"
        raise PipelineError(
            f"{problem}, which is gone: the repository was moved from {old}; fix: link the old "
            f"artifact folder to this one ({link}), or start a new store here ({anew})"
        )
    story, original = f"the store came from {old}", ""
    if (old / "mlflow.db").is_file():
        story = f"the store was copied from {old}"
        original = f", or log into the original's: export MLFLOW_TRACKING_URI={_quoted(sqlite_url(old / 'mlflow.db'))}"
    raise PipelineError(
        f"{problem}, outside this repository: {story}, and new runs would write their models "
        f"there; fix: give this copy a store of its own ({anew}){original}"
    )


def _quoted(path: Path | str) -> str:
    return shlex.quote(str(path))
