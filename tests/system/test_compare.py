"""`compare`: the leaderboard read the way a person reads it, on a store the pipeline filled and on
runs made directly in a real SQLite store (no training needed to vary a param)."""

import io
import json
import re

import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tests.support.cli import run_main
from tests.support.harness import TRAINED_EXPERIMENT, copy_project, repo_env, sh, small_params, store_uri, write_params

# The full tier: the shared trained repository, and real stores of many runs.
pytestmark = pytest.mark.slow
HEADLINE = ["test_accuracy", "test_macro_precision", "test_macro_recall"]


def compare(repo, *args, check=True, columns=120, process=False):
    """`compare ARGS` in `repo` on a terminal `columns` wide: in this process (tests/support/cli.py; a
    new one imports MLflow first, seconds per call), or with `process` in a new one, as a user runs it
    (the exit codes and error lines)."""
    env = repo_env(repo, COLUMNS=str(columns))
    if process:
        return sh(repo, "python", "-m", "mnist_pipeline", "compare", *args, check=check, env=env)
    done = run_main(["compare", *args], repo, env)
    if check and done.returncode != 0:
        raise AssertionError(f"compare exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def read_text(stdout: str) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """The text table as a person reads it: the header, each row by column, and the lines after it."""
    lines = stdout.rstrip("\n").splitlines()
    header = re.split(r" {2,}", lines[0].strip())
    rows: list[dict[str, str]] = []
    rest: list[str] = []
    for line in lines[1:]:
        cells = re.split(r" {2,}", line.strip())
        if rest or not cells[0].isdigit():
            rest.append(line)
        else:
            assert len(cells) == len(header), f"a row that does not line up with the header:\n{stdout}"
            rows.append(dict(zip(header, cells, strict=True)))
    return header, rows, rest


def finished_runs(repo, experiment=TRAINED_EXPERIMENT):
    client = MlflowClient(store_uri(repo))
    found = client.get_experiment_by_name(experiment)
    assert found is not None, experiment
    return client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'")


def differing(runs) -> set[str]:
    names = {name for run in runs for name in run.data.params} - {"model"}
    return {name for name in names if len({run.data.params.get(name) for run in runs}) > 1}


# On the store `dvc repro` filled (other tests may add runs to it: nothing here counts on how many).


def test_the_leaderboard_ranks_every_finished_run_and_shows_only_the_params_that_differ(trained_repo):
    table = pd.read_csv(io.StringIO(compare(trained_repo, "--format", "csv").stdout), dtype=str, keep_default_na=False)
    runs = {run.info.run_id: run for run in finished_runs(trained_repo)}
    assert sorted(table["run_id"]) == sorted(runs) and len(runs) >= 2
    assert list(table["rank"]) == [str(n) for n in range(1, len(runs) + 1)]
    assert pd.to_numeric(table["test_accuracy"]).is_monotonic_decreasing
    params = [c for c in table.columns if c not in ("rank", "model", "run", "run_id", *HEADLINE)]
    assert set(params) == differing(runs.values()) and {"hidden_units", "type"} <= set(params)  # both models
    for row in table.to_dict("records"):
        run = runs[row["run_id"]]
        assert (row["model"], row["run"]) == (run.data.tags["model"], run.info.run_name)
        assert all(float(row[m]) == run.data.metrics[m] for m in HEADLINE)
        assert all(row[p] == {"None": "null"}.get(v := run.data.params.get(p, ""), v) for p in params)


def test_filter_by_model_sort_by_any_metric_and_markdown(trained_repo):
    only_mlp = pd.read_csv(io.StringIO(compare(trained_repo, "--model", "mlp", "--format", "csv").stdout))
    assert set(only_mlp["model"]) == {"mlp"}
    by_loss = pd.read_csv(io.StringIO(compare(trained_repo, "--sort-by", "test_log_loss", "--format", "csv").stdout))
    assert by_loss["test_log_loss"].is_monotonic_increasing  # lower is better for a loss
    by_recall = pd.read_csv(
        io.StringIO(
            compare(trained_repo, "--sort-by", "recall_3", "--ascending", "--limit", "1", "--format", "csv").stdout
        )
    )
    lowest = min(run.data.metrics["recall_3"] for run in finished_runs(trained_repo))
    assert len(by_recall) == 1 and by_recall["recall_3"][0] == lowest
    markdown = compare(trained_repo, "--format", "markdown").stdout.splitlines()
    assert markdown[0].replace(" ", "").startswith("|rank|model|run|") and "test_accuracy" in markdown[0]
    assert set(markdown[1]) <= set("|-: ") and len(markdown) == 2 + len(finished_runs(trained_repo))
    header, rows, _ = read_text(compare(trained_repo).stdout)
    assert header[:3] == ["rank", "model", "run"] and len(rows) == len(finished_runs(trained_repo))


def test_unknown_metric_or_experiment_is_one_line_naming_the_fix(trained_repo):
    done = compare(trained_repo, "--sort-by", "test_acc", check=False, process=True)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: no metric 'test_acc' in these runs; sort by one of: ")
    assert "test_accuracy" in done.stderr and len(done.stderr.splitlines()) == 1
    done = compare(trained_repo, "--experiment", "nope", check=False, process=True)
    assert done.returncode == 1 and done.stderr.startswith("error: no experiment 'nope' in ")
    assert re.search(rf"\(experiments there: .*\b{TRAINED_EXPERIMENT}\b.*\); name one with --experiment", done.stderr)
    assert len(done.stderr.splitlines()) == 1
    done = compare(trained_repo, "--width", "ten", check=False, process=True)
    assert done.returncode == 2 and "argument --width: 'ten': give a whole number, at least 40" in done.stderr


# On runs made directly in a real store: a sweep of one param, and runs that lack a param or metric.

SWEPT = "sweep"
TRIAL = "mlp-nov-trial-0"  # a tuning trial's run: validation scores only, never on the leaderboard


def log_run(client, experiment_id, model, name, params, metrics, status="FINISHED"):
    run = client.create_run(experiment_id, run_name=name, tags={"model": model})
    client.log_batch(
        run.info.run_id,
        params=[Param(k, v) for k, v in params.items()],
        metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
        tags=[RunTag("dvc.stage", "x")],
    )
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def logged_params(params: dict, model: str, **data) -> dict[str, str]:
    """A run's params as the pipeline logs them: the model's section, then data.*."""
    values = {"model": model} | params["models"][model] | {f"data.{k}": v for k, v in (params["data"] | data).items()}
    return {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in values.items()}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A folder holding params.yaml and an MLflow SQLite store: three mlp runs that differ in
    data.train_size alone (one without test_macro_recall), a logistic run, a tuning trial's run, and
    runs that are not finished; and an experiment whose only run is still running."""
    root = tmp_path_factory.mktemp("board")
    copy_project(root)  # the code under test, which `sh` puts first on PYTHONPATH
    params = small_params(SWEPT)
    write_params(root, params)
    client = MlflowClient(store_uri(root))
    sweep = client.create_experiment(SWEPT)
    for name, size, accuracy in (("mlp-small", 400, 0.91), ("mlp-large", 2000, 0.96), ("mlp-all", None, 0.98)):
        metrics = {"test_accuracy": accuracy, "test_macro_precision": accuracy - 0.01, "test_log_loss": 1 - accuracy}
        if size != 400:
            metrics["test_macro_recall"] = accuracy - 0.02
        log_run(client, sweep, "mlp", name, logged_params(params, "mlp", train_size=size), metrics)
    log_run(
        client,
        sweep,
        "logistic",
        "logistic-all",
        logged_params(params, "logistic", train_size=None),
        {"test_accuracy": 0.92, "test_macro_precision": 0.92, "test_macro_recall": 0.92, "test_log_loss": 0.3},
    )
    trial = log_run(client, sweep, "mlp", TRIAL, logged_params(params, "mlp", seed=3), {"trial_val_loss": 0.05})
    client.set_tag(trial, "tune.study", "mlp-nov")
    log_run(client, sweep, "mlp", "mlp-failed", logged_params(params, "mlp", seed=7), {"test_accuracy": 0.99}, "FAILED")
    log_run(client, sweep, "cnn", "cnn-running", {"model": "cnn"}, {}, "RUNNING")
    log_run(client, client.create_experiment("waiting"), "mlp", "mlp-running", {"model": "mlp"}, {}, "RUNNING")
    return root


def test_runs_that_differ_in_one_param_show_that_param_and_no_other(store):
    runs = {
        run.info.run_name: run
        for run in finished_runs(store, SWEPT)
        if run.data.tags["model"] == "mlp" and run.info.run_name != TRIAL
    }
    out = {fmt: compare(store, "--model", "mlp", "--format", fmt).stdout for fmt in ("text", "markdown", "csv")}
    assert not [fmt for fmt, text in out.items() if "nan" in text.lower()]
    header, rows, rest = read_text(out["text"])
    assert header[:7] == ["rank", "model", "run", "data.train_size", *HEADLINE]
    assert [row["run"] for row in rows] == ["mlp-all", "mlp-large", "mlp-small"]  # best test accuracy first; no trial
    for row in rows:
        run = runs[row["run"]]
        assert row["data.train_size"] == run.data.params["data.train_size"].replace("None", "null")
        assert row["test_accuracy"] == f"{run.data.metrics['test_accuracy']:.4f}"
    assert rows[2]["test_macro_recall"] == "-"  # a metric the run lacks
    assert max(map(len, out["text"].splitlines())) <= 120
    # The run id: in the text when it fits (here it does not: the last line says so and how to see it).
    not_shown = re.fullmatch(r"Not shown \(all: --width (\d+) or --format csv\): run_id", " ".join(rest))
    assert not_shown, rest
    needed = not_shown.group(1)
    wider = compare(store, "--model", "mlp", "--width", needed).stdout
    assert read_text(wider)[0][-1] == "run_id" and max(map(len, wider.splitlines())) == int(needed)
    csv = pd.read_csv(io.StringIO(out["csv"]), dtype=str, keep_default_na=False)
    assert list(csv.columns) == ["rank", "model", "run", "data.train_size", *HEADLINE, "run_id"]
    assert csv.loc[csv["run"] == "mlp-small", "test_macro_recall"].item() == ""  # empty, not nan
    assert set(csv["run_id"]) == {run.info.run_id for run in runs.values()}
    small = runs["mlp-small"].info.run_id
    assert f"| 3 | mlp | mlp-small | 400 | 0.9100 | 0.9000 | - | {small} |" in out["markdown"].splitlines()


def test_the_text_fits_120_columns_and_says_what_it_left_out(store):
    wide = compare(store, "--width", "1000").stdout
    header, rows, rest = read_text(wide)
    assert rest == [] and header[-1] == "run_id" and len(rows) == 4
    # Both models: the swept param first, then those that tell the models apart; a param that some
    # runs lack differs; those equal in every run (epochs, seed, data.seed, ...) are not there.
    params = header[3 : header.index("test_accuracy")]
    assert params[0] == "data.train_size"
    assert {"dropout", "hidden_units", "type", "early_stopping_patience"} <= set(params)
    assert not {"epochs", "seed", "data.seed", "data.validation_size", "optimizer", "model"} & set(params)
    logistic = next(row for row in rows if row["model"] == "logistic")
    assert logistic["hidden_units"] == "-" and logistic["data.train_size"] == "null"  # as params.yaml writes it

    for columns in (120, 200):
        out = compare(store, columns=columns).stdout
        assert max(map(len, out.splitlines())) <= columns, out
        header, rows, rest = read_text(out)
        hidden = [name for name in [*params, "run_id"] if name not in header]
        assert header[:4] == ["rank", "model", "run", "data.train_size"] and set(HEADLINE) <= set(header)
        assert hidden, f"all columns fit in {columns}: this test no longer tests cutting"
        needed = max(map(len, wide.splitlines()))
        assert " ".join(rest) == f"Not shown (all: --width {needed} or --format csv): {', '.join(hidden)}"


def test_an_empty_result_is_one_line_and_exit_0(store):
    done = compare(store, "--model", "cnn")  # its only run is still running
    assert (
        done.stdout == f"no finished runs of model 'cnn' in experiment '{SWEPT}'; "
        "models with finished runs there: logistic, mlp\n"
    )
    done = compare(store, "--model", "cnn", "--format", "csv")
    assert done.stdout == "" and done.stderr.startswith("no finished runs of model 'cnn'")
    done = compare(store, "--experiment", "waiting", "--format", "markdown")
    assert done.stdout == "" and done.stderr == (
        "no finished runs in experiment 'waiting' yet; run the pipeline first (dvc repro)\n"
    )


# Scores and names as any client of the store may write them (issue 22), and a sweep (issue 21).

FORGED_NAME = "mlp-evil\n   1  mlp  fake-run  0.9999\x1b[31m"  # a fake row, then red text


@pytest.fixture(scope="module")
def odd_runs(store):
    """Experiments in the same store: runs whose score is nan or inf, logged in the order issue 22
    gives, and runs whose names and values hold a newline, an escape code and a `|`."""
    client = MlflowClient(store_uri(store))
    scores = client.create_experiment("scores")
    nan, inf = float("nan"), float("inf")
    for name, accuracy, loss in (("a", 0.7, 0.3), ("b", 0.9, 0.1), ("c", nan, nan), ("d", 0.5, 0.5), ("e", inf, inf)):
        log_run(
            client, scores, "mlp", f"mlp-{name}", {"model": "mlp"}, {"test_accuracy": accuracy, "test_log_loss": loss}
        )
    forged = client.create_experiment("forged")
    log_run(client, forged, "mlp", "mlp-honest", {"dropout": "0.2"}, {"test_accuracy": 0.8})
    log_run(client, forged, "mlp\x1b[2J", FORGED_NAME, {"dropout": "0.3\n| 9 | x"}, {"test_accuracy": 0.7})
    return store


def test_nan_and_inf_scores_rank_last_with_a_note_whatever_the_order(odd_runs):
    def ranked(*args):
        done = compare(odd_runs, "--experiment", "scores", *args, "--format", "csv")
        table = pd.read_csv(io.StringIO(done.stdout), dtype=str, keep_default_na=False)
        return list(table["run"]), done.stderr, table

    note = "Ranks 4-5 come after every finite score: their test_accuracy is inf or nan, not a number to rank by.\n"
    runs, stderr, table = ranked()
    assert (runs, stderr) == (["mlp-b", "mlp-a", "mlp-d", "mlp-e", "mlp-c"], note)  # before: e, d, c, b, a
    assert list(table["test_accuracy"])[-2:] == ["inf", "nan"]  # inf, not 1.797...e+308
    assert ranked("--ascending")[:2] == (["mlp-d", "mlp-a", "mlp-b", "mlp-e", "mlp-c"], note)
    assert ranked("--limit", "1")[:2] == (["mlp-b"], "")  # before: mlp-e
    loss = ranked("--sort-by", "test_log_loss")[:2]  # a loss: lowest first
    assert loss == (["mlp-b", "mlp-a", "mlp-d", "mlp-e", "mlp-c"], note.replace("test_accuracy", "test_log_loss"))
    assert ranked("--sort-by", "test_log_loss", "--descending")[0] == ["mlp-d", "mlp-a", "mlp-b", "mlp-e", "mlp-c"]

    _, rows, rest = read_text(compare(odd_runs, "--experiment", "scores").stdout)
    assert [(row["run"], row["test_accuracy"]) for row in rows] == [
        ("mlp-b", "0.9000"),
        ("mlp-a", "0.7000"),
        ("mlp-d", "0.5000"),
        ("mlp-e", "inf"),  # before: a 309-digit number
        ("mlp-c", "nan"),
    ]
    assert rest[-1] + "\n" == note
    _, rows, rest = read_text(compare(odd_runs, "--experiment", "scores", "--limit", "4").stdout)
    assert rows[-1]["run"] == "mlp-e" and rest[-1] == (
        "Rank 4 comes after every finite score: its test_accuracy is inf, not a number to rank by."
    )


def test_names_and_values_that_could_forge_output_print_escaped(odd_runs):
    text = compare(odd_runs, "--experiment", "forged", "--width", "200").stdout
    assert not [char for char in text if char != "\n" and not char.isprintable()], repr(text)
    lines = text.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["1", "2"]  # the header and two rows, nothing forged
    assert "mlp-evil\\n   1  mlp  fake-run  0.9999\\x1b[31m" in lines[2] and "mlp\\x1b[2J" in lines[2]
    assert "0.3\\n| 9 | x" in lines[2]

    markdown = compare(odd_runs, "--experiment", "forged", "--format", "markdown").stdout.splitlines()
    assert len(markdown) == 4 and all(line.startswith("| ") and line.endswith(" |") for line in markdown)
    assert [len(re.findall(r"(?<!\\)\|", line)) for line in markdown] == [9, 9, 9, 9]  # 8 cells each
    assert "| mlp\\x1b[2J | mlp-evil\\n   1  mlp  fake-run  0.9999\\x1b[31m | 0.3\\n\\| 9 \\| x |" in markdown[3]

    # CSV is for programs: the values as they are, quoted.
    csv = pd.read_csv(io.StringIO(compare(odd_runs, "--experiment", "forged", "--format", "csv").stdout), dtype=str)
    assert list(csv["run"]) == ["mlp-honest", FORGED_NAME] and csv["dropout"][1] == "0.3\n| 9 | x"
    empty = compare(odd_runs, "--experiment", "forged", "--model", "cnn").stdout
    assert empty.endswith("models with finished runs there: mlp, mlp\\x1b[2J\n")


@pytest.fixture(scope="module")
def lr_sweep(store):
    """Runs as the pipeline logs them: both models on all the data (30 epochs) and as a quick trial
    (400 images, 1 epoch), then a queued sweep of models.mlp.learning_rate on the quick trial."""
    params = small_params("lr-sweep")
    params["models"]["mlp"]["learning_rate"] = 0.002  # the sweep's middle value, whatever params.yaml ships
    full = json.loads(json.dumps(params))
    for model in full["models"].values():
        model["epochs"] = 30
    client = MlflowClient(store_uri(store))
    sweep = client.create_experiment("lr-sweep")

    def log(model, name, accuracy, params, **data):
        metrics = dict.fromkeys(HEADLINE, accuracy)
        log_run(client, sweep, model, name, logged_params(params, model, **data), metrics)

    log("logistic", "logistic-20261123-235023", 0.9262, full, train_size=None)
    log("mlp", "mlp-20261123-235035", 0.9867, full, train_size=None)
    log("logistic", "logistic-baggy-apex", 0.7836, params)
    log("mlp", "mlp-baggy-apex", 0.8661, params)
    for name, rate, accuracy in (("mlp-tawny-moth", 0.001, 0.8512), ("mlp-lusty-kerb", 0.003, 0.8745)):
        swept = json.loads(json.dumps(params))
        swept["models"]["mlp"]["learning_rate"] = rate
        log("mlp", name, accuracy, swept)
    return store


def test_a_swept_param_is_among_the_first_columns_and_values_read_as_written(lr_sweep):
    for model in (["--model", "mlp"], []):  # before: data.train_size and epochs; learning_rate not shown
        out = compare(lr_sweep, "--experiment", "lr-sweep", *model).stdout
        assert "None" not in out and max(map(len, out.splitlines())) <= 120
        header, rows, rest = read_text(out)
        assert header[3:5] == ["learning_rate", "epochs"], out  # the sweep's, then the quick trial's
        assert {row["learning_rate"] for row in rows if row["model"] == "mlp"} == {"0.001", "0.002", "0.003"}
        assert "data.train_size" in " ".join(rest)  # the data settings after those
    # At 130 columns data.train_size does not fit yet, and a narrower param that only tells the
    # models apart would (dropout, before: shown): none takes its place.
    header, _, rest = read_text(compare(lr_sweep, "--experiment", "lr-sweep", columns=130).stdout)
    assert header[3:6] == ["learning_rate", "epochs", HEADLINE[0]] and "data.train_size, activation" in rest[0]

    wide = compare(lr_sweep, "--experiment", "lr-sweep", "--model", "mlp", columns=200).stdout
    header, rows, rest = read_text(wide)
    assert header[3:6] == ["learning_rate", "epochs", "data.train_size"] and rest == []
    assert [row["data.train_size"] for row in rows] == ["null", "400", "400", "400"]  # as params.yaml writes it
    csv = compare(lr_sweep, "--experiment", "lr-sweep", "--format", "csv").stdout
    csv = pd.read_csv(io.StringIO(csv), dtype=str, keep_default_na=False)
    assert set(csv["data.train_size"]) == {"null", "400"}
