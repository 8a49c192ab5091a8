"""`make ui`: the MLflow UI on the project's tracking store, with the link to the experiment's
training runs by test accuracy printed (and with --open, opened in the browser) once it answers."""

import argparse
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mnist_pipeline.core.command import layout_of
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import load_params

# The server's own chatter, kept to warnings and errors: no job runners for GenAI features this
# project never uses, no line per request, and not Starlette's deprecation notice on every start.
QUIET_SERVER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
QUIET_WARNING = "ignore:starlette.middleware.wsgi is deprecated"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve the MLflow UI on the project's tracking store and print the link to the "
        "experiment's training runs, ranked by test accuracy, once it answers; Ctrl-C stops it."
    )
    parser.add_argument("--port", type=port_number, default=5000, help="port to serve on (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--open", action="store_true", help="open the link in the web browser too")


def run(args: argparse.Namespace) -> None:
    ui(load_params(args.params).mlflow.experiment, layout_of(args).root, args.host, args.port, args.open)


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; give a number from 1 to 65535")
    return int(text)


def ui(experiment: str, root: Path, host: str, port: int, open_it: bool = False) -> None:
    """Serve the UI on host:port until Ctrl-C; print the link to `experiment`'s runs once it answers
    (`open_it`: and open it in the browser)."""
    # MLflow loads in seconds: imported when the command runs, not for --help.
    from mnist_pipeline.tracking.runs_view import runs_link
    from mnist_pipeline.tracking.store import check_store, ensure_experiment, tracking_uri

    uri = tracking_uri(root)
    if urlsplit(uri).scheme in ("http", "https"):  # a team server: its UI is already up
        check_store(root)
        print(
            "MLFLOW_TRACKING_URI is a tracking server, which serves the UI itself; "
            f"the runs of '{experiment}', best test accuracy first:"
        )
        link = f"{public(uri)}/{runs_link(ensure_experiment(experiment, root))}"
        print(link, flush=True)
        if open_it:
            open_in_browser(link)
        return
    check_port(host, port)  # before anything starts: the reason would be lost in the server's output
    check_store(root)
    experiment_id = ensure_experiment(experiment, root)  # so that the link leads somewhere
    link = f"http://{in_url(host)}:{port}/{runs_link(experiment_id)}"
    code = serve(
        uri,
        host,
        port,
        f"MLflow UI on the runs of experiment '{experiment}', best test accuracy first (Ctrl-C stops it):\n{link}",
        link if open_it else None,
    )
    if code:
        raise PipelineError(f"the MLflow UI stopped with exit code {code}; its messages are above")


def serve(uri: str, host: str, port: int, ready_message: str, open_link: str | None = None) -> int:
    """`mlflow ui` on the store; print `ready_message` (and open `open_link`) once it answers; its exit
    code (0 after Ctrl-C)."""
    warnings = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), QUIET_WARNING]))
    # A session of its own: Ctrl-C reaches this process only, which stops the server with one
    # SIGTERM. In the terminal's group the server got Ctrl-C twice (mlflow's CLI forwards it to
    # uvicorn) and ended with a traceback.
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--registry-store-uri",
            uri,
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
            "--uvicorn-opts",
            "--log-level warning",
        ],
        env=os.environ | QUIET_SERVER | {"PYTHONWARNINGS": warnings},
        start_new_session=True,
        preexec_fn=stop_with_parent,
    )
    signal.signal(signal.SIGHUP, signal.default_int_handler)  # the terminal closed: stop as for Ctrl-C
    try:
        if wait_until_up(f"http://{in_url(host)}:{port}/health", server):
            print(ready_message, flush=True)
            if open_link:
                open_in_browser(open_link)
        return server.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli.py raises it as an interrupt)
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        return 0


def open_in_browser(link: str) -> None:
    """Python's webbrowser: $BROWSER if set, else the desktop's default browser."""
    if not webbrowser.open(link):
        print("no web browser found to open it; open the link above in one", file=sys.stderr, flush=True)


def stop_with_parent() -> None:
    """In the server's process: SIGTERM when this one dies, even by SIGKILL, so no orphan holds the port."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def check_port(host: str, port: int) -> None:
    """Fail in one line when host:port cannot be listened on: in use, not this machine's, privileged."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise PipelineError(f"--host {host}: {exc.strerror}; give an address of this machine, e.g. 127.0.0.1") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the server binds: a port a closed server left in TIME_WAIT is free to use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PipelineError(
                    f"port {port} on {host} is in use by another program; "
                    f"pick another: make ui PORT={free_port_after(family, address)}"
                ) from None
            raise PipelineError(
                f"cannot listen on port {port} of {host}: {exc.strerror}; "
                "pick another port (make ui PORT=5001) or --host 127.0.0.1"
            ) from None


def free_port_after(family: int, address: tuple) -> int:
    """The first free port above the one taken, to suggest; the next one if none is free nearby."""
    for port in range(address[1] + 1, min(address[1] + 100, 65536)):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address[0], port, *address[2:]))
            except OSError:
                continue
            return port
    return address[1] + 1


def wait_until_up(health_url: str, server: subprocess.Popen) -> bool:
    """True once the server answers; False if it exits first."""
    while server.poll() is None:
        try:
            with urllib.request.urlopen(health_url, timeout=2):
                return True
        except urllib.error.HTTPError:  # it answers, if not with 200
            return True
        except OSError:
            time.sleep(0.3)
    return False


def in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def public(uri: str) -> str:
    """A server's URL without the credentials it may carry."""
    parts = urlsplit(uri)
    netloc = in_url(parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
