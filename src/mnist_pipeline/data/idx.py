"""The four canonical MNIST IDX files: their checksums, and reading and writing the format.

IDX (http://yann.lecun.com/exdb/mnist/): a big-endian header of two zero bytes, a type
code (0x08 = unsigned byte), the number of dimensions, then one uint32 size per dimension,
followed by the data.
"""

import hashlib
import struct
from pathlib import Path

import numpy as np

from mnist_pipeline.core.errors import PipelineError

# The one table of truth for what counts as MNIST: sha256 of each uncompressed file.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FILENAMES = tuple(SHA256)
# Their sizes (header + one byte per pixel or label): a source offering more is refused unread.
SIZE = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}
UBYTE = 0x08


class IdxError(PipelineError):
    """Bytes that are not a valid IDX file, or not the canonical MNIST file."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(name: str, data: bytes) -> None:
    """Raise unless `data` is exactly the canonical MNIST file `name`."""
    digest = sha256(data)
    if digest != SHA256[name]:
        raise IdxError(f"{name}: sha256 {digest[:12]}… does not match the canonical {SHA256[name][:12]}…")


def verify_file(path: Path) -> None:
    """Raise unless the file at `path` is exactly the canonical MNIST file of its name; read in chunks."""
    path = Path(path)
    size = path.stat().st_size
    if size != SIZE[path.name]:
        raise IdxError(f"{path.name}: {size:,} bytes; the canonical file has {SIZE[path.name]:,}")
    with open(path, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    if digest != SHA256[path.name]:
        raise IdxError(f"{path.name}: sha256 {digest[:12]}… does not match the canonical {SHA256[path.name][:12]}…")


def encode(array: np.ndarray) -> bytes:
    """IDX bytes for a uint8 array (images: n×28×28, labels: n)."""
    if array.dtype != np.uint8:
        raise IdxError(f"IDX writer expects uint8 data, got {array.dtype}")
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def decode(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes into a uint8 array, checking the header against the payload size."""
    if len(data) < 4:
        raise IdxError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code != UBYTE or not 1 <= ndim <= 3:
        raise IdxError(f"{name}: not an unsigned-byte IDX file (magic {data[:4].hex()}; expected 000008 then 1–3 dims)")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxError(f"{name}: header is cut short")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected = header_size + int(np.prod(shape))
    if len(data) != expected:
        raise IdxError(f"{name}: header promises shape {shape} ({expected} bytes) but the file has {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def read(path: Path) -> np.ndarray:
    path = Path(path)
    return decode(path.read_bytes(), path.name)
