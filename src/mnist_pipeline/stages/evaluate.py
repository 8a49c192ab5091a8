"""The evaluate stage: one trained model scored on the test set, its reports written for DVC and
logged into the MLflow run that trained it (evaluation/evaluator.py)."""

import argparse

from mnist_pipeline.core.command import layout_of
from mnist_pipeline.core.params import load_params


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a key under `models` in params.yaml")


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    params.model(args.model)
    # Imported once params.yaml has passed: a typo costs a second, not MLflow's and TensorFlow's start-up.
    from mnist_pipeline.training.startup import start

    where = layout_of(args)
    start(where.root, under_dvc=True)
    from mnist_pipeline.evaluation.evaluator import evaluate

    evaluate(args.model, params, where, exits_after=True)  # the stage ends when it returns
