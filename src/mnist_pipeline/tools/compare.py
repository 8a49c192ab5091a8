"""The leaderboard: finished runs of an experiment, ranked by a metric, as text, Markdown or CSV.

A row is a run: rank, model, run name, the params that differ among the runs listed, the headline
test metrics (and the sort metric), and the run id. A param equal in every listed run tells no run
apart, so it is left out; one that some runs lack counts as differing.

Anything a client of the store can write is taken as it comes: a score of nan or inf ranks last,
whatever the order (issue 22), and a name or value holding a newline or an escape code prints
escaped, so it cannot forge a row or colour the terminal."""

from __future__ import annotations

import argparse
import csv
import io
import math
import shutil
import sys
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mnist_pipeline.core.command import at_least, layout_of
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import load_params
from mnist_pipeline.tools.printable import printable

if TYPE_CHECKING:
    from mlflow.entities import Run

HEADLINE = ["test_accuracy", "test_macro_precision", "test_macro_recall"]
MISSING = "-"  # a param or metric a run lacks, in text and Markdown; CSV leaves the cell empty
DEFAULT_WIDTH = 120
GAP = "  "
# MLflow's SQL stores keep an infinite metric as the largest float (SQL has no inf): read it back as inf.
FLOAT_MAX = sys.float_info.max


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", help="MLflow experiment (default: mlflow.experiment in params.yaml)")
    parser.add_argument("--model", help="only runs of this model (a key under `models`)")
    parser.add_argument(
        "--sort-by",
        default="test_accuracy",
        metavar="METRIC",
        help="any logged metric (default: %(default)s); losses sort lowest first",
    )
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--ascending", dest="ascending", action="store_true", default=None, help="lowest first")
    order.add_argument("--descending", dest="ascending", action="store_false", help="highest first")
    parser.add_argument("--format", choices=["text", "markdown", "csv"], default="text")
    parser.add_argument("--limit", type=at_least(1), metavar="N", help="show the best N runs")
    parser.add_argument(
        "--width",
        type=at_least(40),
        metavar="N",
        help="text columns to fill (default: the terminal's width, at least 120)",
    )


def run(args: argparse.Namespace) -> None:
    # MLflow loads in seconds: imported when the command runs, not for --help or a bad params.yaml.
    import mlflow

    from mnist_pipeline.tracking.store import check_store, tracking_uri

    params, root = load_params(args.params), layout_of(args).root
    check_store(root)
    mlflow.set_tracking_uri(tracking_uri(root))
    board = leaderboard(
        args.experiment or params.mlflow.experiment, args.model, args.sort_by, args.ascending, args.limit
    )
    # A line about the table (why it is empty, why runs rank last) goes to stderr for csv and
    # markdown, so a file they write holds the table alone.
    notes = sys.stdout if args.format == "text" else sys.stderr
    if board.empty:  # one line, exit 0
        print(board.empty, file=notes)
        return
    width = args.width or max(DEFAULT_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)
    print(render(board, args.format, width), end="")
    if board.unranked:
        print(textwrap.fill(board.unranked, width) if args.format == "text" else board.unranked, file=notes)


@dataclass(frozen=True)
class Board:
    runs: list[Run]  # best first
    params: list[str]  # the params that differ among `runs`, the most telling first
    metrics: list[str]
    empty: str = ""  # why `runs` is empty, in one line
    unranked: str = ""  # why the last runs shown are last, when their score is nan or inf


def leaderboard(
    experiment: str,
    model: str | None = None,
    sort_by: str = "test_accuracy",
    ascending: bool | None = None,
    limit: int | None = None,
) -> Board:
    """The finished runs of `experiment` (of `model` only, if given), best first; `ascending`
    defaults to True for losses only."""
    import mlflow

    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        names = printable(", ".join(sorted(e.name for e in mlflow.search_experiments()))) or "none"
        raise PipelineError(
            f"no experiment {experiment!r} in {mlflow.get_tracking_uri()} (experiments there: "
            f"{names}); name one with --experiment, or run the pipeline first (dvc repro)"
        )
    runs = mlflow.search_runs([found.experiment_id], "attributes.status = 'FINISHED'", output_format="list")
    # A tuning study's runs (tag tune.study) are scored on validation data only: no test scores to rank.
    runs = [run for run in runs if "tune.study" not in run.data.tags]
    models = sorted({run.data.tags.get("model", MISSING) for run in runs})
    if model:
        runs = [run for run in runs if run.data.tags.get("model") == model]
    if not runs:
        if model and models:
            why = (
                f"no finished runs of model {model!r} in experiment {experiment!r}; "
                f"models with finished runs there: {printable(', '.join(models))}"
            )
        else:
            why = f"no finished runs in experiment {experiment!r} yet; run the pipeline first (dvc repro)"
        return Board([], [], [], why)
    if not any(sort_by in run.data.metrics for run in runs):
        known = sorted({name for run in runs for name in run.data.metrics})
        raise PipelineError(f"no metric {sort_by!r} in these runs; sort by one of: {', '.join(known)}")
    if ascending is None:
        ascending = "loss" in sort_by
    # Every comparison with nan is false, so one nan among the scores stops a sort from ranking them:
    # the finite scores are sorted alone; nan and inf follow them, then the runs without the metric.
    finite: list[Run] = []
    odd: list[Run] = []
    absent: list[Run] = []
    for run in runs:
        score = metric(run, sort_by)
        (absent if sort_by not in run.data.metrics else finite if math.isfinite(score) else odd).append(run)
    finite.sort(key=lambda run: metric(run, sort_by), reverse=not ascending)  # stable: newest first on ties
    ranked = (finite + odd + absent)[:limit]
    unranked = why_last(ranked[len(finite) : len(finite) + len(odd)], len(finite), sort_by)
    return Board(ranked, differing_params(ranked), list(dict.fromkeys([*HEADLINE, sort_by])), unranked=unranked)


def why_last(runs: list[Run], after: int, sort_by: str) -> str:
    """The note under a board whose `runs`, ranked after the first `after`, score nan or inf."""
    if not runs:
        return ""
    values = " or ".join(sorted({str(metric(run, sort_by)) for run in runs}))
    one = len(runs) == 1
    ranks = f"Rank {after + 1} comes" if one else f"Ranks {after + 1}-{after + len(runs)} come"
    their = "its" if one else "their"
    return f"{ranks} after every finite score: {their} {sort_by} is {values}, not a number to rank by."


def metric(run: Run, name: str) -> float:
    """The run's value of metric `name` (nan when it lacks it), inf as inf however the store kept it."""
    value = run.data.metrics.get(name, math.nan)
    return math.copysign(math.inf, value) if abs(value) == FLOAT_MAX else value


def param(run: Run, name: str, missing: str) -> str:
    """The run's value of param `name` as a user writes it in params.yaml: `null`, not Python's `None`."""
    value = run.data.params.get(name, missing)
    return "null" if value == "None" else value


def differing_params(runs: list[Run]) -> list[str]:
    """Params whose value is not the same in every run (absent counts as a value), the most telling
    first: those that differ between runs of one model on the same data settings (what a sweep
    changed), then those that differ between runs of one model otherwise (the epochs of a quick
    trial on less data), then the data settings (data.*), then those that only tell the models
    apart, as the model column already does. Within each, the param with more values first."""
    names = sorted({name for run in runs for name in run.data.params} - {"model"})  # the model column
    values = {name: {run.data.params.get(name) for run in runs} for name in names}
    differ = [name for name in names if len(values[name]) > 1]
    by_model: dict[str, list[Run]] = {}
    by_data: dict[tuple, list[Run]] = {}
    for run in runs:
        model = run.data.tags.get("model", "")
        data = sorted((k, v) for k, v in run.data.params.items() if k.startswith("data."))
        by_model.setdefault(model, []).append(run)
        by_data.setdefault((model, *data), []).append(run)

    def varies(name: str, groups: dict) -> bool:
        return any(len({run.data.params.get(name) for run in group}) > 1 for group in groups.values())

    def kind(name: str) -> int:
        if name.startswith("data."):
            return 2
        if varies(name, by_data):
            return 0  # what a sweep changed
        return 1 if varies(name, by_model) else 3

    return sorted(differ, key=lambda name: (kind(name), -len(values[name])))  # stable: by name on ties


def columns(board: Board) -> list[str]:
    return ["rank", "model", "run", *board.params, *board.metrics, "run_id"]


def cells(board: Board, missing: str, number: str) -> list[list[str]]:
    """Each run's cells in `columns` order; a metric formatted with `number` (nan and inf as such),
    an absent value as `missing`."""
    rows = []
    for rank, run in enumerate(board.runs, 1):
        rows.append(
            [
                str(rank),
                run.data.tags.get("model", missing),
                run.info.run_name or missing,
                *(param(run, name, missing) for name in board.params),
                *(format(metric(run, name), number) if name in run.data.metrics else missing for name in board.metrics),
                run.info.run_id,
            ]
        )
    return rows


def render(board: Board, fmt: str, width: int = DEFAULT_WIDTH) -> str:
    if fmt == "csv":  # full precision: the numbers are for programs
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([columns(board), *cells(board, "", "")])
        return out.getvalue()
    # For a person: a newline or an escape code in a name shows as `\n` or `\x1b`, and cannot start
    # a row of its own or colour the terminal (the CSV keeps the values as they are, quoted).
    names = [printable(name) for name in columns(board)]
    rows = [[printable(cell) for cell in row] for row in cells(board, MISSING, ".4f")]
    right = [name == "rank" or name in board.metrics for name in columns(board)]
    if fmt == "markdown":
        lines = [names, ["---:" if r else "---" for r in right], *rows]
        return "".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |\n" for line in lines)
    return text_table(board, names, rows, right, width)


def text_table(board: Board, names: list[str], rows: list[list[str]], right: list[bool], width: int) -> str:
    """Columns padded to their widest cell. When all of them do not fit in `width`, rank, model, run
    and the metrics always show, then the params in order of interest and the run id, as many as
    fit; a last line names what was left out and how to see it."""
    widths = [
        max(len(cell) for cell in [name, *column]) for name, column in zip(names, zip(*rows, strict=True), strict=True)
    ]
    optional = [i for i, name in enumerate(columns(board)) if name in board.params or name == "run_id"]
    shown = [i for i in range(len(names)) if i not in optional]
    # Params in order of interest, then the run id, up to the first that does not fit: a narrow
    # param further down the order (often one that only tells the models apart) never takes the
    # place of a more telling one.
    for i in optional:
        if sum(widths[j] for j in shown) + len(GAP) * len(shown) + widths[i] > width:
            break
        shown.append(i)
    shown.sort()
    lines = [
        GAP.join(
            cell.rjust(widths[i]) if right[i] else cell.ljust(widths[i]) for i, cell in ((i, line[i]) for i in shown)
        ).rstrip()
        for line in [names, *rows]
    ]
    hidden = [names[i] for i in optional if i not in shown]
    if hidden:
        needed = sum(widths) + len(GAP) * (len(widths) - 1)
        lines.append(textwrap.fill(f"Not shown (all: --width {needed} or --format csv): {', '.join(hidden)}", width))
    return "\n".join(lines) + "\n"
