"""A run never stays RUNNING for a process that is gone: each run records its process and a
heartbeat, ends as KILLED or FAILED when its process stops on a signal or an error, and the next
run of its model (or `mark-dead-runs`) ends the runs of processes that died without a word."""

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow.entities import Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.errors import first_line
from mnist_pipeline.tracking import processes
from mnist_pipeline.tracking.store import store_error, tracking_uri
from mnist_pipeline.tracking.system_metrics import SystemMetrics

log = logging.getLogger(__name__)


# A run records the process that holds it open (processes.identity) under these tags, and a heartbeat.
PROCESS_TAG = "process."
HEARTBEAT_TAG = "process.heartbeat"
HEARTBEAT_S = 60
# A RUNNING run of another machine whose heartbeat is older than this is taken for dead: ten
# missed beats, room for a store that was down a few minutes or clocks that disagree a little.
STALE_AFTER_S = 10 * 60


@contextmanager
def active_run(**start_run_kwargs) -> Iterator[mlflow.ActiveRun]:
    """mlflow.start_run that never leaves a run RUNNING: KILLED on an interrupt, FAILED on an error.

    A process that dies without a word (SIGKILL, out of memory) cannot end its run; the run
    records its process and a heartbeat instead, and the next run of its model ends it. The run
    logs MLflow's system metrics until it ends, however it ends (tracking/system_metrics.py).
    """
    run = open_run(**start_run_kwargs)
    heartbeat = Heartbeat(run.info.run_id)
    system = SystemMetrics(run.info.run_id, resumed=bool(start_run_kwargs.get("run_id")))
    try:
        try:
            end_dead_runs_of(run)
            yield run
        finally:
            system.stop()  # its last point before the run ends: no thread logs into an ended run
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
    # log_system_metrics=False: active_run's own sampler, not MLflow's (whatever the environment says)
    kwargs = start_run_kwargs | {"tags": (start_run_kwargs.get("tags") or {}) | tags, "log_system_metrics": False}
    return mlflow.start_run(**kwargs)


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
    return datetime.now(UTC).isoformat(timespec="seconds")


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
                client.set_tag(
                    run.info.run_id, PROCESS_TAG + "ended_by", f"{processes.host()} pid {os.getpid()}: {why}"
                )
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
        silent = datetime.now(UTC) - beat
        if silent.total_seconds() > STALE_AFTER_S:
            return f"no heartbeat from its process ({where}) for {silent.total_seconds() / 60:.0f} min", last_seen
    return None, None


def mark_dead_runs(root: Path) -> list[str]:
    """end_dead_runs over every experiment of the project's store; one line per run it marked."""
    mlflow.set_tracking_uri(tracking_uri(root))
    experiments = {e.experiment_id: e.name for e in MlflowClient().search_experiments()}
    if not experiments:
        return []
    return [
        f"{experiments[run.info.experiment_id]}  {run.data.tags.get('model', '-')}  {run.info.run_name}  "
        f"{run.info.run_id}: KILLED, {why}"
        for run, why in end_dead_runs(list(experiments))
    ]


def _end_run_or_warn(status: int) -> None:
    """End the active run as `status`; when the store does not answer, say so rather than let its
    error hide the one being raised."""
    run = mlflow.active_run()
    assert run is not None  # called inside the run it ends
    run_id = run.info.run_id
    try:
        mlflow.end_run(RunStatus.to_string(status))  # MLflow forgets the active run before it calls the store
    except Exception as exc:  # noqa: BLE001 - a store error must not hide the one being raised: warn instead
        log.warning(
            "could not mark run %s %s in %s (%s); it stays RUNNING there",
            run_id,
            RunStatus.to_string(status),
            mlflow.get_tracking_uri(),
            store_error(exc),
        )
