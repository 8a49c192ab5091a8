"""Runs whose process died (SIGKILL, a killed `dvc repro`) do not stay RUNNING, and a copied or
moved repository does not log into another folder's artifacts. Real processes, real stores."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import mlflow
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.tracking import processes
from mnist_pipeline.tracking.liveness import active_run
from mnist_pipeline.tracking.store import check_store, use_experiment
from tests.support.harness import REPO, make_repo, repo_env, sh, small_params, store_uri, write_params
from tests.support.stores import client_for, forget_experiment, status

pytestmark = pytest.mark.usefixtures("no_tracking_env")

EXPERIMENT = "stale"

# A stand-in for a stage: opens a run of model argv[2] the way the stages do, says its id, waits.
HOLDER = """
import sys, time
from pathlib import Path
from mnist_pipeline.tracking.liveness import active_run
from mnist_pipeline.tracking.store import use_experiment
use_experiment("holders", Path(sys.argv[1]))
with active_run(run_name="holder", tags={"model": sys.argv[2]}) as run:
    print(run.info.run_id, flush=True)
    time.sleep(600)
"""


def pipe(stream: IO[str] | None) -> IO[str]:
    assert stream is not None  # started with stdout=PIPE and stderr=PIPE
    return stream


def start_holders(root: Path, models: list[str]) -> list[tuple[subprocess.Popen, str]]:
    """Real processes holding RUNNING runs of `models`, once each has said its run id."""
    env = repo_env(REPO)
    check_store(root)  # creates the store's tables once, before the holders race for them
    holders = [
        subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(root), model],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model in models
    ]
    started = [(holder, pipe(holder.stdout).readline().strip()) for holder in holders]
    if not all(run_id for _, run_id in started):
        for holder in holders:  # the others would sleep on, and reading their stderr would wait for them
            holder.kill()
        pytest.fail(f"a holder did not start: {[pipe(holder.stderr).read() for holder in holders]}")
    return started


@pytest.mark.slow  # starts several processes that import MLflow: seconds each
def test_a_run_whose_process_was_killed_is_marked_by_the_next_run_of_its_model_and_by_the_command(store):
    (dead_mlp, dead_id), (live, live_id), (dead_logistic, logistic_id) = start_holders(
        store, ["mlp", "mlp", "logistic"]
    )
    try:
        for holder in (dead_mlp, dead_logistic):
            holder.kill()  # SIGKILL: no handler runs, the run is left as it was
            holder.wait()
        client = client_for(store)
        assert [status(client, i) for i in (dead_id, live_id, logistic_id)] == ["RUNNING"] * 3

        # The next run of mlp (this test's own process) marks the dead mlp run, and only that.
        use_experiment("holders", store)
        with active_run(run_name="next", tags={"model": "mlp"}) as run:
            assert status(client, run.info.run_id) == "RUNNING"
        dead = client.get_run(dead_id)
        assert dead.info.status == "KILLED" and dead.info.end_time is not None
        assert f"its process (pid {dead_mlp.pid} on {processes.host()}) is gone" in dead.data.tags["process.ended_by"]
        assert status(client, live_id) == "RUNNING"  # its process lives
        assert status(client, logistic_id) == "RUNNING"  # another model's: its own stages mark it

        done = sh(store, sys.executable, "-m", "mnist_pipeline", "mark-dead-runs", env=repo_env(REPO))
        assert done.stdout.splitlines() == [
            f"holders  logistic  holder  {logistic_id}: KILLED, its process (pid {dead_logistic.pid} on "
            f"{processes.host()}) is gone"
        ]
        assert status(client, logistic_id) == "KILLED" and status(client, live_id) == "RUNNING"
        again = sh(store, sys.executable, "-m", "mnist_pipeline", "mark-dead-runs", env=repo_env(REPO))
        assert again.stdout == "no RUNNING run has a dead process\n"
    finally:
        live.kill()
        live.wait()


# --- real stages ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repo(tmp_path_factory, mnist_dir):
    """A small repository with its data prepared (no model trained)."""
    root = make_repo(tmp_path_factory.mktemp("stale"), small_params(EXPERIMENT), mnist_dir)
    sh(root, "dvc", "repro", "preprocess")
    check_store(root)  # the store's tables, made once: the test reads the store while stages start
    forget_experiment()
    return root


class Training(subprocess.Popen[str]):
    """A `train mlp` process, and `log`: the file its output goes to."""

    log: Path


def train(repo: Path, *overrides: str) -> Training:
    """`train mlp` started; its output goes to a file (a pipe nobody reads would stop it when full)."""
    with open(repo / f"train-{time.monotonic_ns()}.log", "w+") as log:
        process = Training(
            [sys.executable, "-m", "mnist_pipeline", "train", "mlp", *overrides],
            cwd=repo,
            env=repo_env(repo),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    process.log = Path(log.name)
    return process


def wait_for_epoch(repo: Path, pid: int, log: Path | None = None, timeout_s: float = 180) -> str:
    """The id of the run of process `pid` once it has logged an epoch."""
    client = client_for(repo)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        experiment = client.get_experiment_by_name(EXPERIMENT)
        found = experiment and client.search_runs(
            [experiment.experiment_id], f"tags.`process.pid` = '{pid}' and attributes.status = 'RUNNING'"
        )
        if found and client.get_metric_history(found[0].info.run_id, "val_loss"):
            return found[0].info.run_id
        time.sleep(0.5)
    raise AssertionError(f"process {pid} never logged an epoch:\n{log.read_text()[-3000:] if log else ''}")


@pytest.mark.e2e
def test_a_killed_train_stage_is_marked_by_the_next_and_a_live_one_is_left_running(repo):
    endless = ("--epochs", "1000", "--early_stopping_patience", "0")
    killed, live = train(repo, *endless), train(repo, *endless)
    client = client_for(repo)
    try:
        killed_run, live_run = (wait_for_epoch(repo, p.pid, p.log) for p in (killed, live))
        killed.kill()  # kill -9 mid-fit
        killed.wait()
        assert status(client, killed_run) == "RUNNING"

        done = train(repo, "--epochs", "1")
        assert done.wait(timeout=300) == 0, done.log.read_text()
        output = done.log.read_text()
        assert f"marked run {killed_run}" in output and f"pid {killed.pid} on {processes.host()}) is gone" in output
        assert status(client, killed_run) == "KILLED"
        assert status(client, live_run) == "RUNNING"
        assert live.poll() is None
    finally:
        for process in (killed, live):
            process.send_signal(signal.SIGTERM)  # a live one ends its own run
            process.wait(timeout=120)
    assert status(client, live_run) == "KILLED"


def locked(repo: Path, stage: str) -> dict | None:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"].get(stage)


@contextmanager
def endless_training_under_dvc(repo: Path, shell: str):
    """`dvc repro train@mlp` (1,000 epochs) under `shell`, once the stage has logged an epoch; yields
    dvc, the training process, its run id and the log of both. All of it is stopped afterwards."""
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["models"]["mlp"] |= {"epochs": 1000, "early_stopping_patience": 0}
    write_params(repo, params)
    log = repo / f"repro-{Path(shell).name}-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        dvc = subprocess.Popen(
            ["dvc", "repro", "train@mlp"],
            cwd=repo,
            env=repo_env(repo, SHELL=shell),
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    trainer = None
    try:
        deadline = time.monotonic() + 120
        while trainer is None and time.monotonic() < deadline and dvc.poll() is None:
            trainer = next(
                (p for p in psutil.Process(dvc.pid).children(recursive=True) if p.cmdline()[-2:] == ["train", "mlp"]),
                None,
            )
            time.sleep(0.2)
        assert trainer is not None, f"the train stage never started:\n{log.read_text()}"
        yield dvc, trainer, wait_for_epoch(repo, trainer.pid, log), log
    finally:
        if trainer is not None and trainer.is_running():
            trainer.kill()
        if dvc.poll() is None:
            os.killpg(dvc.pid, signal.SIGKILL)
            dvc.wait()
        (repo / "params.yaml").write_text(original)


@pytest.mark.e2e
@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/sh"])
def test_killing_dvc_repro_stops_its_training_stage(repo, shell):
    """DVC runs the stage through $SHELL -c and waits; SIGKILL to `dvc` used to leave it training as an
    orphan. bash execs the stage, so it is dvc's child; dash (Debian's /bin/sh) stays between them."""
    lock = locked(repo, "train@mlp")
    with endless_training_under_dvc(repo, shell) as (dvc, trainer, run_id, log):
        assert (trainer.ppid() == dvc.pid) == (shell == "/bin/bash")
        dvc.kill()  # SIGKILL to dvc alone: its stage is not signalled
        dvc.wait()
        killed_at = time.monotonic()
        gone, _ = psutil.wait_procs([trainer], timeout=30)
        took = time.monotonic() - killed_at
        assert gone, "the training stage outlived its dvc by 30 s"
        assert took < 10, f"the training stage ended {took:.1f} s after its dvc"
        assert status(client_for(repo), run_id) == "KILLED"
        assert f"dvc (pid {dvc.pid}), which ran this stage, is gone: stopping" in log.read_text()
        assert "error: interrupted by SIGTERM; no output was written" in log.read_text()
    assert locked(repo, "train@mlp") == lock  # DVC recorded nothing of the stage


# --- copied and moved repositories ---------------------------------------------------------
def store_with_a_run(root: Path, experiment: str = "moving") -> str:
    """A project store at `root` holding one run with an artifact, as the stages leave it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "note.txt").write_text("artifact\n")
    use_experiment(experiment, root)
    with active_run(run_name="first", tags={"model": "mlp"}) as run:
        mlflow.log_artifact(str(root / "note.txt"))
    forget_experiment()
    return run.info.run_id


def fixes(message: str) -> list[str]:
    """The commands an error message offers, in order."""
    return re.findall(r"\(((?:cd|mkdir) [^()]+)\)", message) + re.findall(r"export \S+=\S+", message)


# A new command after the fix (MLflow keeps a store's connection open for the rest of a process).
LOGGER = """
import sys
from pathlib import Path
import mlflow
from mnist_pipeline.tracking import liveness
from mnist_pipeline.tracking.liveness import HEARTBEAT_TAG, PROCESS_TAG, STALE_AFTER_S, active_run, end_dead_runs
from mnist_pipeline.tracking.store import check_store, use_experiment
root = Path(sys.argv[1])
use_experiment("moving", root)
with active_run(run_name="next", tags={"model": "mlp"}) as run:
    mlflow.log_artifact(str(root / "note.txt"))
print(run.info.artifact_uri)
"""


def logs_here(root: Path, **env: str) -> Path:
    """Open a run in the store at `root` and log an artifact; the file it wrote, resolved."""
    done = subprocess.run(
        [sys.executable, "-c", LOGGER, str(root)], env=repo_env(REPO, **env), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().removeprefix("file://"), "note.txt").resolve(strict=True)


@pytest.mark.slow  # starts several processes that import MLflow: seconds each
def test_a_moved_repository_refuses_to_log_until_its_old_path_is_linked(tmp_path):
    """The other fix, a new store, is the copy's below."""
    first_run = store_with_a_run(tmp_path / "before")
    moved = tmp_path / "after"
    (tmp_path / "before").rename(moved)
    with pytest.raises(PipelineError) as refused:
        use_experiment("moving", moved)
    message = str(refused.value)
    assert message == (
        f"the MLflow store {moved / 'mlflow.db'} keeps experiment 1's artifacts in {tmp_path / 'before' / 'mlruns'}, "
        f"which is gone: the repository was moved from {tmp_path / 'before'}; fix: link the old artifact folder to "
        f"this one (mkdir -p {tmp_path / 'before'} && ln -s {moved / 'mlruns'} {tmp_path / 'before' / 'mlruns'}), "
        f"or start a new store here (cd {moved} && mv mlflow.db mlflow.db.moved && mv mlruns mlruns.moved)"
    )

    subprocess.run(fixes(message)[0], shell=True, check=True)
    assert logs_here(moved).is_relative_to(moved)
    client = MlflowClient(store_uri(moved))  # the old run's artifact is found again
    assert Path(client.download_artifacts(first_run, "note.txt", str(tmp_path))).read_text() == "artifact\n"


@pytest.mark.slow  # starts several processes that import MLflow: seconds each
@pytest.mark.parametrize("fix", [0, 1], ids=["a store of its own", "the original's store"])
def test_a_copied_repository_refuses_to_log_into_the_original_until_the_fix_it_names_is_run(tmp_path, fix):
    original, copy = tmp_path / "original", tmp_path / "copy"
    store_with_a_run(original)
    shutil.copytree(original, copy, symlinks=True)
    before = sorted(p.relative_to(original) for p in (original / "mlruns").rglob("*"))
    with pytest.raises(PipelineError) as refused:
        use_experiment("moving", copy)
    message = str(refused.value)
    assert message == (
        f"the MLflow store {copy / 'mlflow.db'} keeps experiment 1's artifacts in {original / 'mlruns'}, outside "
        f"this repository: the store was copied from {original}, and new runs would write their models there; "
        f"fix: give this copy a store of its own (cd {copy} && mv mlflow.db mlflow.db.copied && mv mlruns "
        f"mlruns.copied), or log into the original's: export MLFLOW_TRACKING_URI=sqlite:///{original}/mlflow.db"
    )
    assert sorted(p.relative_to(original) for p in (original / "mlruns").rglob("*")) == before  # nothing written

    command = fixes(message)[fix]
    if command.startswith("export "):
        name, _, value = command.removeprefix("export ").partition("=")
        assert logs_here(copy, **{name: value}).is_relative_to(original)  # one store, its artifacts beside it
    else:
        subprocess.run(command, shell=True, check=True)
        assert logs_here(copy).is_relative_to(copy)
        assert sorted(p.relative_to(original) for p in (original / "mlruns").rglob("*")) == before


@pytest.mark.e2e
def test_training_in_a_copied_repository_stops_in_one_line_before_it_starts(repo, tmp_path):
    store_with_a_run(repo, EXPERIMENT)  # the original's store and artifacts, as a trained repository has them
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy, symlinks=True, ignore=shutil.ignore_patterns("cache"))  # cp -a, less DVC's cache
    original_artifacts = sorted((repo / "mlruns").rglob("*"))
    client = client_for(copy)
    found = client.get_experiment_by_name(EXPERIMENT)
    assert found is not None, "the copy holds the original's store"
    experiment = found.experiment_id
    runs_before = len(client.search_runs([experiment]))

    done = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline", "train", "mlp"],
        cwd=copy,
        env=repo_env(copy),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [done.stderr.strip().splitlines()[-1]], done.stderr
    assert errors[0].startswith(
        f"error: the MLflow store {copy / 'mlflow.db'} keeps experiment {experiment}'s "
        f"artifacts in {repo / 'mlruns'}, outside this repository: the store was copied "
        f"from {repo}"
    )
    assert "Traceback" not in done.stderr and "Epoch" not in done.stdout + done.stderr
    assert sorted((repo / "mlruns").rglob("*")) == original_artifacts
    assert len(client.search_runs([experiment])) == runs_before
