"""The tracking server goes away in the middle of a real train stage (its process group killed once the
first epoch's metrics are in its store): training goes on, the model and its history are written, and
the stage ends in seconds saying what was not logged; when the server comes back during the fit, the
metrics kept meanwhile are sent and the run ends complete. docs/reliability.md, row 4b."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mnist_pipeline.tracking.run_file import file_sha256, read_model_id, read_model_sha256, read_run_id
from tests.support.harness import REPO, free_port, repo_env, venv_bin
from tests.support.tiny import tiny_layout, tiny_params

pytestmark = pytest.mark.slow  # a real server and train stage, most of a minute each

# Tiny epochs (60 images) take 0.1-0.2 s on 2 busy cores: enough of them that the fit is still running
# when the server is killed, and in the second test outlasts the server's restart (7-11 s).
EPOCHS = {"dies": 100, "comes back": 200}
STAGE_TIMEOUT_S = 600


class Server:
    """`mlflow server` over a SQLite file on a port of its own, which the test kills and starts again."""

    def __init__(self, folder: Path):
        self.folder, self.db, self.starts = folder, folder / "server.db", 0
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{free_port()}"
        self.cmd = [
            str(Path(venv_bin()) / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            self.url.rsplit(":", 1)[1],
            "--backend-store-uri",
            f"sqlite:///{self.db}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--workers",
            "1",
        ]

    def start(self) -> None:
        self.starts += 1
        log = self.folder / f"server-{self.starts}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        with open(log, "wb") as out:  # in a session of its own: the kill takes its workers too
            self.process = subprocess.Popen(
                self.cmd,
                cwd=self.folder,
                start_new_session=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            )
        deadline = time.monotonic() + 180
        while True:
            assert self.process.poll() is None, f"the server exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"{self.url} did not answer:\n{log.read_text()[-3000:]}"
                time.sleep(0.2)

    def kill(self) -> None:
        assert self.process is not None, "kill() before start()"
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        assert self.process is not None  # __enter__ started it
        if self.process.poll() is None:
            self.kill()


def repo(root: Path, epochs: int) -> Path:
    tiny_layout(root)
    params = tiny_params("outage", epochs=epochs)
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return root


def start_stage(root: Path, url: str) -> subprocess.Popen:
    """`train mlp` logging to `url`; its stdout (Keras's epoch lines) and stderr (ours) go to files."""
    with open(root / "stdout.log", "w") as out, open(root / "stderr.log", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "mnist_pipeline", "--params", str(root / "params.yaml"), "train", "mlp"],
            cwd=root,
            stdout=out,
            stderr=err,
            env=repo_env(REPO, MLFLOW_TRACKING_URI=url),
        )


def logged_epochs(db: Path) -> list[int]:
    """The epochs whose val_loss the server's store holds, read from its file (the server may be gone)."""
    with sqlite3.connect(db, timeout=30) as store:
        return [step for (step,) in store.execute("select step from metrics where key = 'val_loss' order by step")]


def wait_until_epoch_2_is_stored(server: Server, stage: subprocess.Popen, root: Path) -> None:
    """Until the store holds epoch 2: epoch 1's answer has then reached the stage (it sends in order).
    Killing the server while a request is in flight can leave that epoch stored on the server but unanswered,
    so the stage counts it as not logged from there: with epoch 1 in flight the outage looks as if it came
    before the first epoch."""
    deadline = time.monotonic() + 300
    while len(logged_epochs(server.db)) < 2:
        assert stage.poll() is None, f"the stage exited {stage.returncode}:\n{(root / 'stderr.log').read_text()}"
        assert time.monotonic() < deadline, (root / "stderr.log").read_text()
        time.sleep(0.1)


def test_a_server_that_dies_mid_fit_costs_the_record_not_the_model(tmp_path):
    epochs = EPOCHS["dies"]
    root = repo(tmp_path, epochs)
    with Server(tmp_path) as server:
        stage = start_stage(root, server.url)
        wait_until_epoch_2_is_stored(server, stage, root)
        server.kill()
        killed = time.time()
        stage.wait(STAGE_TIMEOUT_S)
        ended = time.time()
    err = (root / "stderr.log").read_text()

    assert stage.returncode == 1 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    said = re.fullmatch(
        rf"error: MLflow run (\w+) is incomplete: {server.url} did not answer from epoch (\d+), so the "
        rf"metrics of epochs (\d+)–{epochs}, the fit's summary and the model were not logged; the "
        r"model is saved in models/mlp and its history in reports/history/mlp\.csv; fix: once the "
        r"store answers, run `dvc repro train@mlp` to train and log it again",
        last,
    )
    assert said, last
    run_id, first = said[1], int(said[2])
    assert said[3] == said[2] and 1 < first < epochs, "the server was not killed mid-fit: this test proves nothing"
    # Why, in the network's words (connection refused, reset or closed), not MLflow's page of wrapped errors.
    why = re.search(rf"the tracking store {server.url} did not answer at epoch {first} \((.*)\); training goes on", err)
    assert why and "connection" in why[1].lower() and "HTTPConnectionPool" not in why[1], err

    # Everything trained is on disk: every epoch's history, the model, and the run file naming the run.
    history = pd.read_csv(root / "reports/history/mlp.csv")
    assert history["epoch"].tolist() == list(range(1, epochs + 1))
    model_dir = root / "models/mlp"
    assert read_run_id(model_dir) == run_id and read_model_id(model_dir) is None
    assert read_model_sha256(model_dir) == file_sha256(model_dir / "model.keras")
    # The store holds the epochs before the outage, and the run as the stage left it: it could not end it.
    # The epoch whose request was in flight at the kill may be stored too, unanswered, so counted as not
    # logged (docs/reliability.md, 4b): with faster epochs the kill can land in that window.
    assert logged_epochs(server.db) in (list(range(1, first)), list(range(1, first + 1)))
    with sqlite3.connect(server.db) as store:
        assert store.execute("select status from runs where run_uuid = ?", (run_id,)).fetchone() == ("RUNNING",)

    # Bounded: the rest of the fit, then seconds; not MLflow's minutes of retries.
    after_fit = ended - (root / "reports/history/mlp.csv").stat().st_mtime  # written as the fit ends
    print(f"stage ended {ended - killed:.1f} s after the kill, {after_fit:.1f} s after the fit")
    assert ended - killed < 60 and after_fit < 20


def test_a_server_back_during_the_fit_gets_every_epoch_and_the_model(tmp_path):
    epochs = EPOCHS["comes back"]
    root = repo(tmp_path, epochs)
    with Server(tmp_path) as server:
        stage = start_stage(root, server.url)
        wait_until_epoch_2_is_stored(server, stage, root)
        server.kill()
        killed_ms = time.time() * 1000
        server.start()  # same port, same store
        back_ms = time.time() * 1000
        stage.wait(STAGE_TIMEOUT_S)
        err = (root / "stderr.log").read_text()
        assert stage.returncode == 0, err

        client = MlflowClient(server.url)
        run_id, model_id = read_run_id(root / "models/mlp"), read_model_id(root / "models/mlp")
        assert run_id and model_id, "the train stage recorded its run and model"
        run = client.get_run(run_id)
        history = client.get_metric_history(run_id, "val_loss")
        logged_model = client.get_logged_model(model_id)

    assert run.info.status == "FINISHED" and run.data.metrics["epochs_trained"] == epochs
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))
    assert logged_model.source_run_id == run_id and logged_model.name == "mlp"
    # Some epochs ended while the server was down: kept, and sent once it answered again.
    during = sorted(m.step for m in history if killed_ms < m.timestamp < back_ms)
    assert during, "no epoch ended while the server was down: this test proves nothing"
    sent_late = re.search(
        rf"the tracking store {server.url} answers again: the metrics of epochs (\d+)–(\d+) were "
        "sent late",
        err,
    )
    assert sent_late and int(sent_late[1]) <= during[0] and during[-1] <= int(sent_late[2]), err
    assert "incomplete" not in err
