import gzip
import http.server
import json
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress

import numpy as np
import pytest

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.data import idx
from mnist_pipeline.data.download_config import DownloadConfig
from mnist_pipeline.data.sources import from_npz
from mnist_pipeline.stages.download import download


def params(*sources, timeout_s=10) -> DownloadConfig:
    return DownloadConfig(sources=list(sources), timeout_s=timeout_s)


def test_when_every_source_fails_one_error_lists_each_and_nothing_is_written(http_server, tmp_path):
    folder, url = http_server
    (folder / "mnist.npz").write_bytes(b"not a zip file")
    sources = (
        {"kind": "local", "path": str(tmp_path / "absent")},
        {"kind": "idx_mirror", "url": url},  # serves nothing: 404
        {"kind": "keras_npz", "url": url + "mnist.npz"},
        {"kind": "idx_mirror", "url": "http://127.0.0.1:9/"},  # nothing listens on the discard port
    )
    with pytest.raises(PipelineError) as error:
        download(params(*sources), tmp_path / "raw")
    lines = str(error.value).splitlines()
    assert lines[0] == "no source gave the canonical MNIST files:"
    assert f"local {tmp_path / 'absent'}: folder {tmp_path / 'absent'} does not exist" in lines[1]
    assert "HTTP Error 404" in lines[2]
    assert f"keras_npz {url}mnist.npz:" in lines[3]
    assert "Connection refused" in lines[4]
    assert lines[5].startswith("fix: ")
    assert not (tmp_path / "raw").exists()
    assert list(tmp_path.glob(".raw*")) == []


def test_a_gzip_that_does_not_inflate_is_reported(tmp_path):
    folder = tmp_path / "gz"
    folder.mkdir()
    for name in idx.FILENAMES:
        (folder / f"{name}.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(PipelineError, match="gzip does not inflate"):
        download(params({"kind": "local", "path": str(folder)}), tmp_path / "raw")


def test_npz_is_read_without_pickle(tmp_path):
    np.savez(
        tmp_path / "mnist.npz",
        x_train=np.array([{"a": 1}], dtype=object),
        y_train=np.zeros(1),
        x_test=np.zeros(1),
        y_test=np.zeros(1),
    )
    with pytest.raises(ValueError, match="allow_pickle=False"):
        from_npz(tmp_path / "mnist.npz", tmp_path)


# --- bad mirrors: real HTTP servers on 127.0.0.1 that stall, trickle, send too much or cut short ---
@contextmanager
def mirror(answer):
    """A real HTTP server on 127.0.0.1 that answers every GET with `answer(handler, stop)`; yields
    (base URL, bytes sent). `stop` is set when the test ends, to release answers that wait."""
    stop = threading.Event()
    sent: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with suppress(BrokenPipeError, ConnectionResetError):  # the client gave up on us: what these tests want
                answer(self, stop, sent)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", sent
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def headers(handler, length: int | None) -> None:
    handler.send_response(200)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()


def endless(handler, stop, sent, announce=None):
    """Zeros until the client leaves, announcing `announce` bytes (or no length: read until close)."""
    handler.close_connection = True
    headers(handler, announce)
    zeros = bytes(1 << 16)
    while not stop.is_set():
        handler.wfile.write(zeros)
        sent.append(len(zeros))


def test_a_mirror_announcing_ten_gigabytes_is_refused_before_reading(tmp_path, caplog):
    with (
        mirror(lambda h, stop, sent: endless(h, stop, sent, announce=10 * 10**9)) as (url, _sent),
        pytest.raises(PipelineError) as error,
    ):
        download(params({"kind": "idx_mirror", "url": url}), tmp_path / "raw")
    assert "the server offers 10,000,000,000 bytes, more than the MNIST file can be" in str(error.value)
    assert not (tmp_path / "raw").exists() and list(tmp_path.glob(".raw*")) == []


def test_an_endless_body_is_refused_at_the_size_cap_with_bounded_memory(tmp_path):
    """In a child process, so its peak memory is the download's own: a body held in memory would
    add the whole cap (47 MB) to it; streamed to disk it adds a few MB."""
    script = """
import json, resource, sys
from pathlib import Path
from mnist_pipeline.data.download_config import DownloadConfig
from mnist_pipeline.stages.download import download
from mnist_pipeline.core.errors import PipelineError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    download(DownloadConfig(sources=[{"kind": "idx_mirror", "url": sys.argv[1]}], timeout_s=60), Path(sys.argv[2]))
except PipelineError as exc:
    error = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_kib": after - before, "error": error}))
"""
    with mirror(endless) as (url, sent):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", script, url, str(tmp_path / "raw")],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        seconds = time.monotonic() - started
    result = json.loads(done.stdout)
    cap = idx.SIZE["train-images-idx3-ubyte"]
    limit = cap + cap // 1000 + 1024  # the .gz of the file can be no larger
    assert f"more than the {limit:,} bytes the MNIST file can be; download stopped" in result["error"]
    assert result["grew_kib"] < 16 * 1024, result  # a buffered body would add 47 MB
    assert cap < sum(sent) < cap + (32 << 20)  # it read to the cap, and stopped there
    assert seconds < 20 and not (tmp_path / "raw").exists() and list(tmp_path.glob(".raw*")) == []


def test_a_gzip_bomb_is_refused_at_the_canonical_size(tmp_path):
    folder = tmp_path / "bomb"
    folder.mkdir()
    for name in idx.FILENAMES:  # a few KB on disk, twice the canonical size inflated
        (folder / f"{name}.gz").write_bytes(gzip.compress(bytes(2 * idx.SIZE[name])))
    with pytest.raises(PipelineError, match="inflates to more than the 47,040,016 bytes of train-images-idx3-ubyte"):
        download(params({"kind": "local", "path": str(folder)}), tmp_path / "raw")
