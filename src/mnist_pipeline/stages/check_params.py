"""The check_params stage: all of params.yaml, and download.yaml beside it, validated before any other
stage does work. First in the graph, so a bad value stops `dvc repro` before DVC clears any output;
its output never changes, so it re-runs nothing downstream."""

import argparse

from mnist_pipeline.core.atomic import write_text
from mnist_pipeline.core.command import layout_of
from mnist_pipeline.core.params import load_params
from mnist_pipeline.data.download_config import DOWNLOAD_FILE, load_download_config


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> None:
    load_params(args.params)
    load_download_config(args.params.parent / DOWNLOAD_FILE)  # it comes with a pull request too
    write_text(layout_of(args).params_ok, f"{args.params.name} is valid\n")  # constant: downstream never re-runs for it
