"""What the tests and the benchmark runner (bench/run.py) both use to drive the project as a user
would: a throwaway git + DVC repository holding the pipeline, its commands run with this
environment's `python` and `dvc`, and real servers on free ports of 127.0.0.1. Plain Python, no
pytest: tests/conftest.py, the tests, servers.py and bench/ import it."""

import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import yaml

from mnist_pipeline.tracking.sqlite_url import sqlite_url

REPO = Path(__file__).resolve().parents[2]
TRAINED_EXPERIMENT = "trained"
REPRO_LOG = "dvc-repro.log"  # untracked: it does not make later runs git.dirty
CHROMIUM = "/usr/bin/chromium"
# Screenshots the tests take of what a user sees (MLflow UI, DVC plots), kept after the run to look at.
SCREENSHOTS = REPO / "test-output" / "screenshots"

# What TensorFlow prints as it starts (Abseil's notice, oneDNN, CUDA probing, CPU instructions).
TF_START_UP = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "cpu_feature_guard",
    "This TensorFlow binary is optimized",
)


# --- a repository to run the pipeline in ----------------------------------------------------
def venv_bin() -> str:
    """The folder of this interpreter, so `python` and `dvc` in subprocesses are this environment's."""
    return str(Path(sys.executable).parent)


def repo_env(repo: Path, **extra: str) -> dict[str, str]:
    """This environment's python and dvc, `repo`'s sources, and no MLflow/DVC settings from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env |= {"PATH": venv_bin() + os.pathsep + env["PATH"], "PYTHONPATH": str(repo / "src"), "DVC_NO_ANALYTICS": "1"}
    return env | extra


def sh(repo: Path, *cmd: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in `repo` as a user would, with this environment's `python` and `dvc`."""
    done = subprocess.run(cmd, cwd=repo, env=env or repo_env(repo), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def copy_project(dest: Path) -> None:
    """The files `dvc repro` needs, copied into a fresh folder."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "download.yaml", "tune.yaml", ".gitignore", "MLproject", "python_env.yaml"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


def shipped_params() -> dict:
    """The shipped params.yaml."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def small_params(experiment: str | None = None) -> dict:
    """The shipped params.yaml cut down to 400 training images and one epoch."""
    params = shipped_params()
    params["data"] |= {"validation_size": 100, "train_size": 400}
    if experiment:
        params["mlflow"]["experiment"] = experiment
    params["registry"]["min_accuracy"] = 0.0  # small models are far below the shipped threshold
    for model in params["models"].values():
        model |= {"epochs": 1, "batch_size": 64}
    params["models"]["mlp"]["hidden_units"] = [32]
    # The rate the tests' scenarios were measured at (ci-report's gates: 0.01 lifts accuracy while one
    # digit's recall falls past registry.max_digit_drop), whatever the shipped default becomes.
    params["models"]["mlp"]["learning_rate"] = 0.002
    for model in params["models"].values():  # and without augmentation, as they were measured
        model["augmentation"]["enabled"] = False
    return params


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def use_local_mnist(repo: Path, mnist_dir: Path) -> None:
    """download.yaml naming `mnist_dir` as the only source (made absolute: the stage runs in `repo`)."""
    config = yaml.safe_load((REPO / "download.yaml").read_text())
    config["sources"] = [{"kind": "local", "path": str(mnist_dir.resolve())}]
    (repo / "download.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def make_repo(root: Path, params: dict, mnist_dir: Path | None = None) -> Path:
    """A fresh git + DVC repository holding the pipeline and `params`, committed; with `mnist_dir`,
    MNIST comes from that folder only."""
    copy_project(root)
    write_params(root, params)
    if mnist_dir is not None:
        use_local_mnist(root, mnist_dir)
    sh(root, "git", "init", "-q", "-b", "main")
    sh(root, "git", "config", "user.email", "ci@example.com")
    sh(root, "git", "config", "user.name", "CI")
    sh(root, "dvc", "init", "-q")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")  # the plot templates dvc.yaml names
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")  # the plots page's template
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "baseline")
    return root


def code_deps(repo: Path, deps: list[str]) -> set[str]:
    """The project modules a stage's deps (paths as dvc.lock holds them) name: each .py file under
    src/, and every .py file in a folder under src/ (dvc.yaml names a package whose every module the
    stage runs by its folder)."""
    modules = set()
    for dep in deps:
        if not dep.startswith("src/"):
            continue
        path = repo / dep
        found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        modules |= {str(module.relative_to(repo)) for module in found}
    return modules


def store_uri(repo: Path) -> str:
    """The pipeline's default tracking store in `repo`."""
    return sqlite_url(repo / "mlflow.db")


# --- what a person reads --------------------------------------------------------------------
def assert_reads_clean(log: str, what: str) -> None:
    """No colour codes or cursor moves, and none of TensorFlow's start-up lines, in a log a person reads."""
    assert "\x1b[" not in log, f"{what}: raw ANSI codes:\n{log}"
    noise = [line for line in log.splitlines() if any(text in line for text in TF_START_UP)]
    assert not noise, f"{what}: TensorFlow start-up lines:\n" + "\n".join(noise)


# --- servers on 127.0.0.1 -------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running(
    cmd: list[str], health_url: str, cwd: Path, env: dict | None = None, timeout_s: float = 180, log: Path | None = None
):
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
def tracking_server(
    folder: Path, backend_uri: str, artifacts: str | None = None, *options: str, env: dict | None = None
):
    """`mlflow server` on a free port of 127.0.0.1 over `backend_uri`, proxying artifacts to
    `artifacts` (default: a folder in `folder`, which also holds its log); yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(Path(venv_bin()) / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        artifacts or str(folder / "artifacts"),
        *options,
    ]
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


def refuse_the_network() -> None:
    """Connections beyond 127.0.0.1 and ::1 fail at once in this process, and subprocesses'
    HTTP clients (urllib, requests, pip) are sent to a proxy on a closed port."""

    def local(host) -> bool:
        try:
            return host in (None, "", "localhost") or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def refuse(host):
        raise ConnectionRefusedError(f"{host}: the fast tier has no network (mark the test @pytest.mark.slow)")

    real_getaddrinfo, real_connect, real_connect_ex = (
        socket.getaddrinfo,
        socket.socket.connect,
        socket.socket.connect_ex,
    )

    def getaddrinfo(host, *args, **kwargs):
        return real_getaddrinfo(host, *args, **kwargs) if local(host) else refuse(host)

    def connect(self, address):
        inet = self.family in (socket.AF_INET, socket.AF_INET6)
        return real_connect(self, address) if not inet or local(address[0]) else refuse(address[0])

    def connect_ex(self, address):
        inet = self.family in (socket.AF_INET, socket.AF_INET6)
        return real_connect_ex(self, address) if not inet or local(address[0]) else refuse(address[0])

    socket.getaddrinfo = getaddrinfo
    # Replacing methods on their class is this guard's purpose; mypy cannot type that (python/mypy#2427).
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens
    os.environ.update(
        http_proxy=closed,
        https_proxy=closed,
        HTTP_PROXY=closed,
        HTTPS_PROXY=closed,
        no_proxy="localhost,127.0.0.1,::1",
        NO_PROXY="localhost,127.0.0.1,::1",
    )
