"""Runs whose process died (SIGKILL, a killed `dvc repro`) do not stay RUNNING, and a copied or
moved repository does not log into another folder's artifacts. Real processes, real stores."""

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import mlflow
import pytest

from mnist_pipeline.tracking import liveness, processes
from mnist_pipeline.tracking.liveness import HEARTBEAT_TAG, PROCESS_TAG, STALE_AFTER_S, active_run, end_dead_runs
from mnist_pipeline.tracking.store import use_experiment
from tests.support.harness import REPO, repo_env
from tests.support.stores import client_for, status

pytestmark = pytest.mark.usefixtures("no_tracking_env")


def test_a_reused_pid_is_dead_and_another_machine_is_dead_only_when_its_heartbeat_is_old(store):
    client = client_for(store)
    use_experiment("crafted", store)
    crafted = mlflow.get_experiment_by_name("crafted")
    assert crafted is not None, "use_experiment creates it"
    experiment = crafted.experiment_id
    me = {PROCESS_TAG + key: value for key, value in processes.identity().items()}
    now = datetime.now(UTC)
    old_beat = now - timedelta(seconds=STALE_AFTER_S + 60)

    def beat(when: datetime) -> dict:
        return {HEARTBEAT_TAG: when.isoformat(timespec="seconds")}

    elsewhere = me | {"process.host": "another-machine", "process.pid_space": "x/pid:[1]", "process.pid": "1"}
    cases = {  # tags → the status after the sweep
        "this process": (me | beat(old_beat), "RUNNING"),
        "this PID, another start time (a reused PID)": (me | {"process.start_time": "1"}, "KILLED"),
        "another machine, silent for long": (elsewhere | beat(old_beat), "KILLED"),
        "another machine, a recent heartbeat": (elsewhere | beat(now - timedelta(seconds=90)), "RUNNING"),
        "this host name in another PID space (a container)": (
            me | {"process.pid_space": "other", "process.pid": "999999999"} | beat(now),
            "RUNNING",
        ),
        "no process recorded (an older run)": ({}, "RUNNING"),
    }
    ids = {
        name: client.create_run(experiment, tags=tags | {"model": "mlp"}).info.run_id
        for name, (tags, _) in cases.items()
    }
    ended = {run.info.run_id for run, _ in end_dead_runs([experiment])}
    assert {name: status(client, ids[name]) for name in cases} == {name: want for name, (_, want) in cases.items()}
    assert ended == {ids[name] for name, (_, want) in cases.items() if want == "KILLED"}
    silent = client.get_run(ids["another machine, silent for long"])
    assert silent.info.end_time == int(old_beat.replace(microsecond=0).timestamp() * 1000)  # its last sign of life
    assert "no heartbeat from its process (pid 1 on another-machine) for 11 min" in silent.data.tags["process.ended_by"]


def test_the_heartbeat_is_renewed_while_the_run_is_open_and_stops_with_it(store, monkeypatch):
    monkeypatch.setattr(liveness, "HEARTBEAT_S", 0.3)
    client = client_for(store)
    use_experiment("beats", store)
    with active_run(run_name="beating", tags={"model": "mlp"}) as run:
        first = client.get_run(run.info.run_id).data.tags[HEARTBEAT_TAG]
        deadline = time.monotonic() + 10
        while client.get_run(run.info.run_id).data.tags[HEARTBEAT_TAG] == first:
            assert time.monotonic() < deadline, "the heartbeat was never renewed"
            time.sleep(0.2)
    deadline = time.monotonic() + 1
    while [thread for thread in threading.enumerate() if thread.name == "mlflow-heartbeat"]:
        assert time.monotonic() < deadline, "the heartbeat thread outlived its run by a second"
        time.sleep(0.05)


# A process that runs a stand-in for dvc (sleep), watches it, and says what reached it.
WATCHER = """
import os, signal, subprocess, sys, time
from mnist_pipeline.tracking import processes
processes.POLL_S = 0.1  # the stage's 1 s, cut: the test waits three polls
signal.signal(signal.SIGTERM, lambda *_: sys.exit("SIGTERM"))
signal.signal(signal.SIGINT, lambda *_: print("SIGINT: ending", flush=True))  # a stage that is ending
dvc = subprocess.Popen(["sleep", "60"])
processes.stop_with(dvc.pid, "dvc")
if sys.argv[1] == "ctrl-c":
    os.kill(os.getpid(), signal.SIGINT)
dvc.kill()
dvc.wait()
time.sleep(3 * processes.POLL_S)
print("ended on its own")
"""


@pytest.mark.parametrize(
    ("before", "code", "stdout", "stopped"),
    [
        ("nothing", 1, "", True),
        ("ctrl-c", 0, "SIGINT: ending\nended on its own\n", False),
    ],
    ids=["dvc gone", "Ctrl-C first"],
)
def test_the_watch_stops_a_stage_whose_dvc_is_gone_unless_it_is_ending_already(before, code, stdout, stopped):
    """Ctrl-C under dash kills the shell at once, and dvc returns while the stage is still ending its
    run: a SIGTERM then would cut that short."""
    done = subprocess.run(
        [sys.executable, "-c", WATCHER, before], env=repo_env(REPO), capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (code, stdout), done.stderr
    assert ("which ran this stage, is gone: stopping" in done.stderr) == stopped
    assert done.stderr.endswith("SIGTERM\n") == stopped
