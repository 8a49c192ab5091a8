"""The download stage: the four canonical MNIST IDX files from the first source that has them.

Only files matching the checksums in `idx.SHA256` are swapped in, so the output is identical
whichever source served it (data/sources.py: each source bounded in time, disk and memory)."""

import argparse
import logging
from pathlib import Path

from mnist_pipeline.core.atomic import atomic_dir
from mnist_pipeline.core.command import layout_of
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.data import idx
from mnist_pipeline.data.download_config import DOWNLOAD_FILE, DownloadConfig, load_download_config
from mnist_pipeline.data.sources import describe, fetch_to

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=DOWNLOAD_FILE, help=f"the sources to try, in order (default: {DOWNLOAD_FILE})"
    )


def run(args: argparse.Namespace) -> None:
    download(load_download_config(args.config), layout_of(args).raw)


def download(params: DownloadConfig, out_dir: Path) -> str:
    """Write the verified IDX files into `out_dir`; return a description of the source used."""
    failures = []
    for source in params.sources:
        name = describe(source)
        log.info("trying %s", name)
        try:
            with atomic_dir(out_dir) as tmp:  # beside out_dir; swapped in only if every file verifies
                fetch_to(source, tmp, params.timeout_s)
                for filename in idx.FILENAMES:
                    idx.verify_file(tmp / filename)
        except Exception as exc:  # noqa: BLE001 - any failure of one source means: try the next, and report why
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, PipelineError) else str(exc)
            log.warning("%s failed: %s", name, reason)
            failures.append(f"  - {name}: {reason}")
            continue
        log.info("MNIST from %s: 4 files verified by sha256, written to %s", name, out_dir)
        return name
    raise PipelineError(
        "no source gave the canonical MNIST files:\n"
        + "\n".join(failures)
        + "\nfix: put the IDX files (or mnist.npz) in a folder and name it in download.yaml's sources"
    )
