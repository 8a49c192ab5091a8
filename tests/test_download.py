import gzip
import io

import numpy as np
import pytest

from mnist_pipeline import idx
from mnist_pipeline.config import DownloadParams
from mnist_pipeline.download import download, from_npz
from mnist_pipeline.errors import PipelineError


def params(*sources, timeout_s=10) -> DownloadParams:
    return DownloadParams(sources=list(sources), timeout_s=timeout_s)


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
    arrays = {key: idx.decode(mnist_files[name]) for key, name in zip(("x_train", "y_train", "x_test", "y_test"), idx.FILENAMES)}
    np.savez_compressed(folder / "mnist.npz", **arrays)
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
    sources = ({"kind": "local", "path": str(wrong)}, {"kind": "idx_mirror", "url": url},
               {"kind": "local", "path": str(mnist_dir)})
    assert download(params(*sources), tmp_path / "raw") == f"local {mnist_dir}"
    assert written(tmp_path / "raw") == mnist_files


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


def test_npz_is_read_without_pickle():
    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1), x_test=np.zeros(1), y_test=np.zeros(1))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        from_npz(buffer.getvalue())
