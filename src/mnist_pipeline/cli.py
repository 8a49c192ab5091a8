"""Command line: one subcommand per DVC stage. params.yaml is validated before anything heavy
is imported, so a typo costs a second, not a TensorFlow start-up."""

import argparse
import errno
import logging
import os
import signal
import sys
from pathlib import Path

from mnist_pipeline.atomic import write_text
from mnist_pipeline.config import PARAMS_FILE, load_params
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.layout import Layout


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="mnist-pipeline", description=__doc__.splitlines()[0])
    cli.add_argument("--params", type=Path, default=PARAMS_FILE,
                     help="parameters file; outputs go beside it (default: %(default)s)")
    stages = cli.add_subparsers(dest="stage", required=True, metavar="STAGE")
    stages.add_parser("check-params", help="validate params.yaml (the first DVC stage)")
    stages.add_parser("download", help="fetch and verify the four MNIST IDX files into data/raw")
    stages.add_parser("preprocess", help="split train/validation into data/processed; summary in reports/data")
    for stage, text in (("train", "train one model from params.yaml"), ("evaluate", "evaluate one trained model")):
        sub = stages.add_parser(stage, help=text)
        sub.add_argument("model", help="a key under `models` in params.yaml")
    report = stages.add_parser("ci-report", help="dvc repro what changed; Markdown report of it against --base")
    report.add_argument("--base", required=True, help="git revision to compare with, e.g. origin/main")
    report.add_argument("--output", type=Path, help="write the report here (default: stdout)")
    report.add_argument("--embed-images", action=argparse.BooleanOptionalAction, default=True,
                        help="embed confusion matrices by relative path (off for a PR comment, which cannot show them)")
    return cli


# A full disk, a file-size limit, a read-only folder: the user's to fix, not a bug to trace.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


class Terminated(KeyboardInterrupt):
    """SIGTERM (CI cancelling a job, `kill`), unwound like Ctrl-C so runs and temp files are closed."""


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_terminated)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # TensorFlow's C++ start-up chatter (no CUDA on this machine, CPU features) buries the stage's own log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        params = load_params(args.params)
        if args.stage in ("train", "evaluate"):
            params.model(args.model)
        run(args, params, Layout(args.params.resolve().parent))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot write{where}: {exc.strerror}; free space or fix permissions, then run again",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
        print(f"error: interrupted by {signum.name}; no output was written, run the stage again", file=sys.stderr)
        return 128 + signum
    return 0


def run(args: argparse.Namespace, params, layout: Layout) -> None:
    # Each stage imports only what it needs: TensorFlow and MLflow take seconds to load.
    if args.stage == "check-params":
        write_text(layout.params_ok, f"{args.params.name} is valid\n")  # constant: downstream never re-runs for it
    elif args.stage == "download":
        from mnist_pipeline.download import download

        download(params.download, layout.raw)
    elif args.stage == "preprocess":
        from mnist_pipeline.preprocess import preprocess

        preprocess(params.data, layout.raw, layout.processed, layout.data_reports)
    elif args.stage in ("train", "evaluate"):
        from mnist_pipeline.tracking import check_store

        check_store(layout.root)  # in seconds, before TensorFlow loads and any training starts
        if args.stage == "train":
            from mnist_pipeline.train import train

            train(args.model, params, layout)
        else:
            from mnist_pipeline.evaluate import evaluate

            evaluate(args.model, params, layout)
    elif args.stage == "ci-report":
        from mnist_pipeline.ci_report import ci_report

        ci_report(args.base, layout, args.output, args.embed_images)
