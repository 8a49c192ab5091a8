import gzip
import time

import numpy as np
import pytest

from mnist_pipeline.data import idx
from mnist_pipeline.stages.download import download
from tests.unit.test_download import headers, mirror, params


def written(out_dir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out_dir.iterdir()}


def test_local_folder_of_gzipped_files(mnist_dir, mnist_files, tmp_path):
    used = download(params({"kind": "local", "path": str(mnist_dir)}), tmp_path / "raw")
    assert used == f"local {mnist_dir}"
    assert written(tmp_path / "raw") == mnist_files


def test_idx_mirror_over_http(http_server, mnist_files, tmp_path, caplog):
    folder, url = http_server
    for name, data in mnist_files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1))
    caplog.set_level("INFO")
    download(params({"kind": "idx_mirror", "url": url}), tmp_path / "raw")
    assert written(tmp_path / "raw") == mnist_files
    assert f"MNIST from idx_mirror {url}" in caplog.text


def test_keras_npz_over_http(http_server, mnist_files, tmp_path):
    folder, url = http_server
    arrays = {
        key: idx.decode(mnist_files[name])
        for key, name in zip(("x_train", "y_train", "x_test", "y_test"), idx.FILENAMES, strict=True)
    }
    np.savez_compressed(folder / "mnist.npz", allow_pickle=False, **arrays)
    download(params({"kind": "keras_npz", "url": url + "mnist.npz"}), tmp_path / "raw")
    assert written(tmp_path / "raw") == mnist_files


def test_falls_through_bad_sources_to_a_good_one(http_server, mnist_dir, mnist_files, tmp_path):
    folder, url = http_server
    # Right names, wrong bytes: well-formed IDX files of zeros.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name, data in mnist_files.items():
        (wrong / name).write_bytes(idx.encode(np.zeros_like(idx.decode(data))))
    # A mirror whose files are truncated gzip streams.
    for name, data in mnist_files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1)[:1000])
    sources = (
        {"kind": "local", "path": str(wrong)},
        {"kind": "idx_mirror", "url": url},
        {"kind": "local", "path": str(mnist_dir)},
    )
    assert download(params(*sources), tmp_path / "raw") == f"local {mnist_dir}"
    assert written(tmp_path / "raw") == mnist_files


def trickle(handler, stop, sent, seconds=float("inf")):
    """Announce the real size of a file, then send a byte every 0.2 s for `seconds`, then nothing."""
    headers(handler, idx.SIZE["train-images-idx3-ubyte"])
    started = time.monotonic()
    while time.monotonic() - started < seconds and not stop.is_set():
        handler.wfile.write(b"\x1f")
        sent.append(1)
        stop.wait(0.2)
    stop.wait()  # the connection stays open, silent


def cut_short(handler, stop, sent):
    """Announce 1,000 bytes, send 600, close the connection."""
    handler.close_connection = True
    headers(handler, 1000)
    handler.wfile.write(bytes(600))
    sent.append(600)


def source_time(caplog, name: str) -> tuple[float, str]:
    """Seconds between trying source `name` and its failure, from the stage's own log, and the reason."""
    start = next(r.created for r in caplog.records if r.getMessage() == f"trying {name}")
    failed = next(r for r in caplog.records if r.getMessage().startswith(f"{name} failed: "))
    return failed.created - start, failed.getMessage()


@pytest.mark.parametrize(
    "answer",
    [trickle, lambda h, stop, sent: trickle(h, stop, sent, seconds=1.2)],
    ids=["trickle", "trickle-then-stall"],
)
def test_a_trickling_mirror_is_given_up_at_its_deadline_and_the_next_source_used(
    answer, mnist_dir, mnist_files, tmp_path, caplog
):
    caplog.set_level("INFO")
    timeout_s = 2.0
    with mirror(answer) as (url, sent):
        used = download(
            params({"kind": "idx_mirror", "url": url}, {"kind": "local", "path": str(mnist_dir)}, timeout_s=timeout_s),
            tmp_path / "raw",
        )
    assert used == f"local {mnist_dir}" and written(tmp_path / "raw") == mnist_files
    spent, reason = source_time(caplog, f"idx_mirror {url}")
    # The deadline is the source's whole time: a read-by-read timeout would wait out a byte every
    # 0.2 s for ever, and after the trickle stops, a full timeout_s more.
    assert timeout_s - 0.1 < spent < timeout_s + 0.7, spent
    print(f"gave up after {spent:.2f} s")
    assert f"gave up after {timeout_s:g} s (timeout_s in download.yaml" in reason and len(sent) > 3


def test_a_short_read_is_reported_and_the_next_source_used(mnist_dir, mnist_files, tmp_path, caplog):
    caplog.set_level("INFO")
    with mirror(cut_short) as (url, _sent):
        used = download(
            params({"kind": "idx_mirror", "url": url}, {"kind": "local", "path": str(mnist_dir)}), tmp_path / "raw"
        )
    assert used == f"local {mnist_dir}" and written(tmp_path / "raw") == mnist_files
    _, reason = source_time(caplog, f"idx_mirror {url}")
    assert reason.endswith(f"{url}train-images-idx3-ubyte.gz: got 600 of 1,000 bytes (connection cut short)")
