"""The preprocess stage: a seeded, stratified validation split into data/processed, and the split
sizes and images per digit into reports/data (data/validation_split.py)."""

import argparse

from mnist_pipeline.core.command import layout_of
from mnist_pipeline.core.params import load_params


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> None:
    data = load_params(args.params).data
    # pandas and scikit-learn load in a second or two: imported when the stage runs, not for --help.
    from mnist_pipeline.data.validation_split import preprocess

    where = layout_of(args)
    preprocess(data, where.raw, where.processed, where.data_reports)
