"""MLflow plumbing: which store, which experiment, and the tags that tie a run to code and data."""

import hashlib
import json
import logging
import os
import shlex
import subprocess
import threading
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from unittest.mock import patch

import mlflow
import numpy as np
from filelock import FileLock
from mlflow.entities import LoggedModelInput, Metric, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline import processes
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

# A run records the process that holds it open (processes.identity) under these tags, and a heartbeat.
PROCESS_TAG = "process."
HEARTBEAT_TAG = "process.heartbeat"
HEARTBEAT_S = 60
# A RUNNING run of another machine whose heartbeat is older than this is taken for dead: ten
# missed beats, room for a store that was down a few minutes or clocks that disagree a little.
STALE_AFTER_S = 10 * 60


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
        # One quick try for this call only; the usual retries after it.
        with lock, fail_fast():
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
    check_artifact_home(experiment_id, root)
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
        f" && mv mlruns mlruns.{how}" if (here / "mlruns").exists() else "")
    problem = f"the MLflow store {here / 'mlflow.db'} keeps experiment {experiment_id}'s artifacts in {where}"
    if how == "moved":
        link = f"mkdir -p {_quoted(old)} && ln -s {_quoted(here / 'mlruns')} {_quoted(where)}"
        raise PipelineError(f"{problem}, which is gone: the repository was moved from {old}; fix: link the old "
                            f"artifact folder to this one ({link}), or start a new store here ({anew})")
    story, original = f"the store came from {old}", ""
    if (old / "mlflow.db").is_file():
        story = f"the store was copied from {old}"
        original = f", or log into the original's: export MLFLOW_TRACKING_URI={_quoted(f'sqlite:///{old}/mlflow.db')}"
    raise PipelineError(f"{problem}, outside this repository: {story}, and new runs would write their models "
                        f"there; fix: give this copy a store of its own ({anew}){original}")


def _quoted(path: Path) -> str:
    return shlex.quote(str(path))


@contextmanager
def active_run(**start_run_kwargs) -> Iterator[mlflow.ActiveRun]:
    """mlflow.start_run that never leaves a run RUNNING: KILLED on an interrupt, FAILED on an error.

    A process that dies without a word (SIGKILL, out of memory) cannot end its run; the run
    records its process and a heartbeat instead, and the next run of its model ends it.
    """
    run = open_run(**start_run_kwargs)
    heartbeat = Heartbeat(run.info.run_id)
    try:
        end_dead_runs_of(run)
        yield run
    except KeyboardInterrupt:
        _end_run_or_warn(RunStatus.KILLED)
        raise
    except BaseException:
        _end_run_or_warn(RunStatus.FAILED)
        raise
    else:
        mlflow.end_run()
    finally:
        heartbeat.stop()


def open_run(**start_run_kwargs) -> mlflow.ActiveRun:
    """mlflow.start_run, with this process recorded in the run's tags.

    A resumed run gets its new process's tags before it is RUNNING again, so no other process sees
    it RUNNING under the old, ended one.
    """
    tags = process_tags()
    resumed = start_run_kwargs.get("run_id") or os.environ.get("MLFLOW_RUN_ID")  # evaluate; `mlflow run`
    if resumed:
        MlflowClient().log_batch(resumed, tags=[RunTag(key, value) for key, value in tags.items()])
    return mlflow.start_run(**start_run_kwargs | {"tags": (start_run_kwargs.get("tags") or {}) | tags})


def end_dead_runs_of(run: mlflow.ActiveRun) -> None:
    """Mark KILLED the RUNNING runs of `run`'s model and experiment whose process is gone, saying so;
    housekeeping that never stops the stage."""
    model = run.data.tags.get("model")
    try:
        dead = end_dead_runs([run.info.experiment_id], model) if model else []
    except MlflowException as exc:
        log.warning("could not look for dead runs of %s: %s", model, first_line(exc))
        return
    for ended, why in dead:
        log.warning("marked run %s (%s) KILLED: %s", ended.info.run_id, ended.info.run_name, why)


def process_tags() -> dict[str, str]:
    """This process (host, PID space, PID, start time) and a first heartbeat, as run tags."""
    return {PROCESS_TAG + key: value for key, value in processes.identity().items()} | {HEARTBEAT_TAG: _now()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Heartbeat:
    """Renews the run's heartbeat tag every HEARTBEAT_S from a daemon thread until stop(): another
    machine cannot look up this process, but it can tell a silent run from a live one.

    A thread, not the epoch callback: an epoch can take longer than any fixed limit, the beat must
    not. A beat that fails is skipped (the run's own logging reports a store that fails).
    """

    def __init__(self, run_id: str):
        self.stopped = threading.Event()
        client = MlflowClient(mlflow.get_tracking_uri())
        threading.Thread(target=self._beat, args=(client, run_id), name="mlflow-heartbeat", daemon=True).start()

    def _beat(self, client: MlflowClient, run_id: str) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            try:
                client.set_tag(run_id, HEARTBEAT_TAG, _now())
            except Exception as exc:  # noqa: BLE001 - whatever the store raises, the beat waits for the next
                log.debug("heartbeat of run %s not logged: %s", run_id, first_line(exc))

    def stop(self) -> None:
        self.stopped.set()


def end_dead_runs(experiment_ids: list[str], model: str | None = None) -> list[tuple[Run, str]]:
    """Mark KILLED the RUNNING runs (of `model`, or all) whose process is gone; return them with why.

    Gone means: on this machine, no process with the recorded PID and start time; run on another
    machine, no heartbeat for STALE_AFTER_S. A run that records no process is left alone.
    """
    client = MlflowClient()
    query = "attributes.status = 'RUNNING'" + (f" and tags.model = '{model}'" if model else "")
    ended, page = [], None
    while True:
        runs = client.search_runs(experiment_ids, query, max_results=1000, page_token=page)
        for run in runs:
            why, last_seen = why_dead(run.data.tags)
            if why is None:
                continue
            try:
                # Read again: a run whose process was only silent may have ended on its own meanwhile.
                if client.get_run(run.info.run_id).info.status != "RUNNING":
                    continue
                client.set_tag(run.info.run_id, PROCESS_TAG + "ended_by",
                               f"{processes.host()} pid {os.getpid()}: {why}")
                client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED), end_time=last_seen)
            except MlflowException as exc:  # e.g. a server that lets nobody else end another user's run
                log.warning("could not mark run %s KILLED (%s): %s", run.info.run_id, why, first_line(exc))
                continue
            ended.append((run, why))
        page = runs.token
        if not page:
            return ended


def why_dead(tags: dict[str, str]) -> tuple[str | None, int | None]:
    """Why the run with these tags has no live process, and its last sign of life (ms), or (None, None)."""
    recorded = {key.removeprefix(PROCESS_TAG): value for key, value in tags.items() if key.startswith(PROCESS_TAG)}
    if "pid" not in recorded:
        return None, None
    try:
        beat = datetime.fromisoformat(recorded.get("heartbeat", ""))
    except ValueError:
        beat = None
    last_seen = int(beat.timestamp() * 1000) if beat else None
    where = f"pid {recorded['pid']} on {recorded.get('host')}"
    gone = processes.gone(recorded)
    if gone:
        return f"its process ({where}) is gone", last_seen
    if gone is None and beat is not None:
        silent = datetime.now(timezone.utc) - beat
        if silent.total_seconds() > STALE_AFTER_S:
            return f"no heartbeat from its process ({where}) for {silent.total_seconds() / 60:.0f} min", last_seen
    return None, None


def mark_dead_runs(root: Path) -> list[str]:
    """end_dead_runs over every experiment of the project's store; one line per run it marked."""
    mlflow.set_tracking_uri(tracking_uri(root))
    experiments = {e.experiment_id: e.name for e in MlflowClient().search_experiments()}
    if not experiments:
        return []
    return [f"{experiments[run.info.experiment_id]}  {run.data.tags.get('model', '-')}  {run.info.run_name}  "
            f"{run.info.run_id}: KILLED, {why}" for run, why in end_dead_runs(list(experiments))]


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


def log_training_inputs(name: str, params: Params, dtype: str, processed: Path, train: tuple,
                        validation: tuple) -> None:
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
    return read_run_file(model_dir).get("run_id")


def read_model_id(model_dir: Path) -> str | None:
    """The logged model's id; None for a folder written before it was recorded."""
    return read_run_file(model_dir).get("model_id")


def read_model_sha256(model_dir: Path) -> str | None:
    """The sha256 of the model.keras training saved; None for a folder written before it was recorded."""
    return read_run_file(model_dir).get("model_sha256")


def file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def read_run_file(model_dir: Path) -> dict[str, str]:
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
    try:
        mlflow.log_input(dataset, context=context)
    except MlflowException as exc:
        # Runs that log the same new dataset at once (queue workers) race to insert it, and the store's
        # unique key on (experiment, name, digest) fails the loser; its second try finds the row and links it.
        if "unique constraint" not in str(exc).lower():
            raise
        mlflow.log_input(dataset, context=context)
    return dataset
