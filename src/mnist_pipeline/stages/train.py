"""The train stage: one model of params.yaml fitted and recorded as an MLflow run
(training/trainer.py); with --evaluate, evaluated into the same run (the MLproject's `train`)."""

import argparse

from mnist_pipeline.core.command import layout_of
from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.params import load_params, override_model

TAKES_OVERRIDES = True  # --epochs 2 --learning_rate=0.01: any key of models.MODEL, for this run only


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Any key of models.MODEL can be overridden for this run: --epochs 2 --hidden_units '[256, 256]' "
        "(what `mlflow run -P key=value` passes). The overrides are logged as the run's params; "
        "params.yaml is not changed."
    )
    parser.add_argument("model", help="a key under `models` in params.yaml")
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="then evaluate it into the same MLflow run (the MLproject's `train` entry point)",
    )


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    params.model(args.model)
    if args.overrides:
        params = override_model(params, args.model, split_overrides(args.overrides))
    # Imported once params.yaml has passed: a typo costs a second, not MLflow's and TensorFlow's start-up.
    from mnist_pipeline.training.startup import start

    where = layout_of(args)
    start(where.root, under_dvc=True)
    from mnist_pipeline.training.trainer import train

    train(args.model, params, where)
    if args.evaluate:
        from mnist_pipeline.evaluation.evaluator import evaluate

        evaluate(args.model, params, where)


def split_overrides(extra: list[str]) -> dict[str, str]:
    """`--epochs 2 --learning_rate=0.01` → {"epochs": "2", "learning_rate": "0.01"}."""
    overrides, words = {}, iter(extra)
    for word in words:
        if not word.startswith("--") or len(word) < 3:
            raise ParamsError(f"unexpected argument {word!r}; overrides look like --epochs 2")
        key, sep, value = word[2:].partition("=")
        if not sep:
            following = next(words, None)
            if following is None:
                raise ParamsError(f"override --{key} has no value; give one, e.g. --{key} 2")
            value = following
        overrides[key] = value
    return overrides
