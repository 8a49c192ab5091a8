"""The tune command: an Optuna study over tune.MODEL's search space in tune.yaml, every trial an MLflow
run (tuning/trials.py); the best values printed, or written into params.yaml with --apply."""

import argparse

from mnist_pipeline.core.command import at_least, layout_of
from mnist_pipeline.core.params import load_params
from mnist_pipeline.tuning.schema import load_tuning, search_for


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run an Optuna study over the search space in tune.MODEL of tune.yaml: each trial trains "
        "MODEL as the train stage does and scores it on the validation split. Workers started "
        "anywhere with the same --storage and --study share the study. Prints a line per trial and "
        "the best values; --apply writes them into params.yaml."
    )
    parser.add_argument("model", help="a key under `tune` in tune.yaml (and under `models` in params.yaml)")
    parser.add_argument(
        "--trials",
        type=at_least(0),
        metavar="N",
        help="finished trials the study should reach, all workers together (default: tune.MODEL.trials); 0 runs none",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage the study's workers share, e.g. postgresql://user@host/optuna "
        "(default: sqlite:///optuna.db at the repository root)",
    )
    parser.add_argument("--study", metavar="NAME", help="the study's name (default: MODEL)")
    parser.add_argument(
        "--apply",
        action="store_true",
        help="write the best trial's values into params.yaml (models.MODEL), keeping its comments",
    )


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    search = search_for(load_tuning(args.params, params), params, args.model)
    where = layout_of(args)
    # Imported once both files have passed: a typo costs a second, not MLflow's and TensorFlow's start-up.
    if args.storage:  # before the store is opened: a storage that is MLflow's database is refused unwritten
        from mnist_pipeline.tracking.store import tracking_uri
        from mnist_pipeline.tuning.optuna_study import check_not_tracking_store

        check_not_tracking_store(args.storage, tracking_uri(where.root))
    from mnist_pipeline.training.startup import start

    start(where.root, under_dvc=False)
    from mnist_pipeline.tuning.trials import tune

    tune(args.model, params, search, where, args.params, args.trials, args.storage, args.study, args.apply)
