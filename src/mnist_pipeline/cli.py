"""MNIST pipeline: one command per DVC stage, plus compare (a leaderboard of runs), predict and tune (a search).

params.yaml is validated before anything heavy is imported, so a typo costs a second, not a
TensorFlow start-up."""

import argparse
import errno
import faulthandler
import logging
import shutil
import signal
import sys
from pathlib import Path

from mnist_pipeline.config import PARAMS_FILE, load_params, override_model
from mnist_pipeline.errors import ParamsError, PipelineError, Terminated, interrupt
from mnist_pipeline.layout import Layout


def parser() -> argparse.ArgumentParser:
    here = Layout(Path())  # the paths as the help names them, relative to the repository root
    cli = argparse.ArgumentParser(prog="mnist-pipeline", description=__doc__.splitlines()[0])
    cli.add_argument("--params", type=Path, default=PARAMS_FILE,
                     help="parameters file; outputs go beside it (default: %(default)s)")
    stages = cli.add_subparsers(dest="stage", required=True, metavar="COMMAND")
    stages.add_parser("check-params", help="validate params.yaml (the first DVC stage)")
    stages.add_parser("download", help=f"fetch and verify the four MNIST IDX files into {here.raw}")
    stages.add_parser("preprocess",
                      help=f"split train/validation into {here.processed}; summary in {here.data_reports}")
    train = stages.add_parser(
        "train", help="train one model from params.yaml",
        epilog="Any key of models.MODEL can be overridden for this run: --epochs 2 --hidden_units '[256, 256]' "
               "(what `mlflow run -P key=value` passes). The overrides are logged as the run's params; "
               "params.yaml is not changed.")
    train.add_argument("model", help="a key under `models` in params.yaml")
    train.add_argument("--evaluate", action="store_true",
                       help="then evaluate it into the same MLflow run (the MLproject's `train` entry point)")
    evaluate = stages.add_parser("evaluate", help="evaluate one trained model")
    evaluate.add_argument("model", help="a key under `models` in params.yaml")
    stages.add_parser("summarize", help=f"every model's headline test scores into {here.metrics}")
    tune = stages.add_parser(
        "tune", help="search models.MODEL's params with Optuna (tune.MODEL in tune.yaml); every trial an MLflow run",
        description="Run an Optuna study over the search space in tune.MODEL of tune.yaml: each trial trains "
                    "MODEL as the train stage does and scores it on the validation split. Workers started anywhere "
                    "with the same --storage and --study share the study. Prints a line per trial and the best "
                    "values; --apply writes them into params.yaml.")
    tune.add_argument("model", help="a key under `tune` in tune.yaml (and under `models` in params.yaml)")
    tune.add_argument("--trials", type=at_least(0), metavar="N",
                      help="finished trials the study should reach, all workers together (default: tune.MODEL.trials); "
                           "0 runs none")
    tune.add_argument("--storage", metavar="URL",
                      help="Optuna storage the study's workers share, e.g. postgresql://user@host/optuna "
                           "(default: sqlite:///optuna.db at the repository root)")
    tune.add_argument("--study", metavar="NAME", help="the study's name (default: MODEL)")
    tune.add_argument("--apply", action="store_true",
                      help="write the best trial's values into params.yaml (models.MODEL), keeping its comments")
    stages.add_parser("mark-dead-runs", help="mark KILLED the RUNNING MLflow runs whose process is gone",
                      description="Mark KILLED every RUNNING run in the tracking store whose process is gone "
                                  "(killed with SIGKILL, out of memory, a machine that rebooted): on this machine, "
                                  "no process with its PID and start time; from another machine, no heartbeat for "
                                  "10 minutes. Prints one line per run it marks. Each train or evaluate stage does "
                                  "the same for its own model's runs.")

    compare = stages.add_parser("compare", help="rank the finished runs in the tracking store (a leaderboard)")
    compare.add_argument("--experiment", help="MLflow experiment (default: mlflow.experiment in params.yaml)")
    compare.add_argument("--model", help="only runs of this model (a key under `models`)")
    compare.add_argument("--sort-by", default="test_accuracy", metavar="METRIC",
                         help="any logged metric (default: %(default)s); losses sort lowest first")
    order = compare.add_mutually_exclusive_group()
    order.add_argument("--ascending", dest="ascending", action="store_true", default=None, help="lowest first")
    order.add_argument("--descending", dest="ascending", action="store_false", help="highest first")
    compare.add_argument("--format", choices=["text", "markdown", "csv"], default="text")
    compare.add_argument("--limit", type=at_least(1), metavar="N", help="show the best N runs")
    compare.add_argument("--width", type=at_least(40), metavar="N",
                         help="text columns to fill (default: the terminal's width, at least 120)")

    predict = stages.add_parser("predict", help="predict the digit in image files or .npy batches")
    predict.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                         help="PNG/JPEG/… images of any size and mode, or .npy arrays (28, 28), (N, 28, 28), (N, 784)")
    predict.add_argument("--model", default=str(here.model_dir("mlp")), metavar="SOURCE",
                         help="a .keras file or models/<name> folder, runs:/<run id>/mlp, models:/<model id>, "
                              "or models:/mnist-mlp@champion (default: %(default)s)")

    ui = stages.add_parser("ui", help="the MLflow UI on the tracking store; prints the link to the experiment's runs",
                           description="Serve the MLflow UI on the project's tracking store and print the link to "
                                       "the experiment's training runs once it answers; Ctrl-C stops it.")
    ui.add_argument("--port", type=port_number, default=5000, help="port to serve on (default: %(default)s)")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")

    report = stages.add_parser("ci-report", help="dvc repro what changed; Markdown report of it against --base")
    report.add_argument("--base", required=True, help="git revision to compare with, e.g. origin/main")
    report.add_argument("--output", type=Path, help="write the report here (default: stdout)")
    report.add_argument("--embed-images", action=argparse.BooleanOptionalAction, default=True,
                        help="embed confusion matrices by relative path (off for a PR comment, which cannot show them)")
    return cli


def at_least(minimum: int):
    """An argparse type: a whole number no smaller than `minimum`."""
    def number(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, at least {minimum}")
        return int(text)
    return number


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; give a number from 1 to 65535")
    return int(text)


def split_overrides(extra: list[str]) -> dict[str, str]:
    """`--epochs 2 --learning_rate=0.01` → {"epochs": "2", "learning_rate": "0.01"}."""
    overrides, words = {}, iter(extra)
    for word in words:
        if not word.startswith("--") or len(word) < 3:
            raise ParamsError(f"unexpected argument {word!r}; overrides look like --epochs 2")
        key, sep, value = word[2:].partition("=")
        if not sep:
            value = next(words, None)
            if value is None:
                raise ParamsError(f"override --{key} has no value; give one, e.g. --{key} 2")
        overrides[key] = value
    return overrides


# A full disk, a file-size limit, a read-only folder: the user's to fix, not a bug to trace.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def _raise_interrupt(signum, frame):
    raise interrupt(signum)


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args, extra = cli.parse_known_args(argv)
    if extra and args.stage != "train":
        cli.error(f"unrecognized arguments: {' '.join(extra)}")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    faulthandler.enable()  # a crash in TensorFlow's C++ (SIGSEGV, SIGABRT) still prints the Python stack
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.stage == "predict":  # needs no params.yaml, only a model
            return run_predict(args, Layout(args.params.resolve().parent))
        params = load_params(args.params, tuning=args.stage == "tune")
        if args.stage in ("train", "evaluate"):
            params.model(args.model)
        if args.stage == "tune":
            params.tuning(args.model)
        if extra:
            params = override_model(params, args.model, split_overrides(extra))
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
        # A command that knows more about what it leaves says so in the exception (tune: which trial failed).
        print(f"error: interrupted by {signum.name}; {str(exc) or 'no output was written, run the stage again'}",
              file=sys.stderr)
        return 128 + signum
    return 0


def run(args: argparse.Namespace, params, layout: Layout) -> None:
    # Each stage imports only what it needs: TensorFlow and MLflow take seconds to load.
    if args.stage == "check-params":
        from mnist_pipeline.atomic import write_text

        write_text(layout.params_ok, f"{args.params.name} is valid\n")  # constant: downstream never re-runs for it
    elif args.stage == "download":
        from mnist_pipeline.download import download

        download(params.download, layout.raw)
    elif args.stage == "preprocess":
        from mnist_pipeline.preprocess import preprocess

        preprocess(params.data, layout.raw, layout.processed, layout.data_reports)
    elif args.stage == "summarize":
        from mnist_pipeline.summary import summarize

        summarize(list(params.models), layout)
    elif args.stage == "mark-dead-runs":
        from mnist_pipeline.tracking import check_store, mark_dead_runs

        check_store(layout.root)
        print("\n".join(mark_dead_runs(layout.root)) or "no RUNNING run has a dead process")
    elif args.stage == "compare":
        import mlflow

        from mnist_pipeline.compare import DEFAULT_WIDTH, leaderboard, render
        from mnist_pipeline.tracking import check_store, tracking_uri

        check_store(layout.root)
        mlflow.set_tracking_uri(tracking_uri(layout.root))
        board = leaderboard(args.experiment or params.mlflow.experiment, args.model, args.sort_by, args.ascending,
                            args.limit)
        if board.empty:  # one line, exit 0; on stderr for csv and markdown, so a file stays empty
            print(board.empty, file=sys.stdout if args.format == "text" else sys.stderr)
        else:
            width = args.width or max(DEFAULT_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)
            print(render(board, args.format, width), end="")
    elif args.stage in ("train", "evaluate"):
        from mnist_pipeline.processes import stop_with_dvc
        from mnist_pipeline.quiet_tf import import_tensorflow
        from mnist_pipeline.tracking import check_store

        check_store(layout.root)  # in seconds, before TensorFlow loads and any training starts
        stop_with_dvc()  # a stage whose `dvc repro` was killed ends too, rather than train on as an orphan
        import_tensorflow()
        if args.stage == "train":
            from mnist_pipeline.train import train

            train(args.model, params, layout)
        if args.stage == "evaluate" or args.evaluate:
            from mnist_pipeline.evaluate import evaluate

            evaluate(args.model, params, layout)
    elif args.stage == "tune":
        from mnist_pipeline.quiet_tf import import_tensorflow
        from mnist_pipeline.tracking import check_store

        check_store(layout.root)
        import_tensorflow()
        from mnist_pipeline.tune import tune

        tune(args.model, params, layout, args.params, args.trials, args.storage, args.study, args.apply)
    elif args.stage == "ui":
        from mnist_pipeline.ui import ui

        ui(params.mlflow.experiment, layout.root, args.host, args.port)
    elif args.stage == "ci-report":
        from mnist_pipeline.ci_report import ci_report

        ci_report(args.base, layout, args.output, args.embed_images)


def run_predict(args: argparse.Namespace, layout: Layout) -> int:
    from mnist_pipeline.predict import load_inputs, load_model, predict
    from mnist_pipeline.quiet_tf import import_tensorflow

    names, images = load_inputs(args.inputs)  # bad inputs fail before TensorFlow loads
    import_tensorflow()
    digits, probabilities = predict(load_model(args.model, layout.root), images)
    width = max(len(name) for name in names)
    print(f"{'input':<{width}}  digit  probability")
    for name, digit, probability in zip(names, digits, probabilities):
        print(f"{name:<{width}}  {digit:>5}  {probability:>11.4f}")
    return 0
