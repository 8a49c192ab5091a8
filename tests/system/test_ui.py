"""What a person sees of MLflow. `make ui OPEN=1` (python -m mnist_pipeline ui --open) serves the
UI on the pipeline's store, prints the link to the experiment's training runs ranked by test
accuracy and opens it in the browser, or says in one line that the port is taken. In the UI
(headless Debian Chromium at 1600×900, driven by Playwright), the link shows the runs with their
test accuracy, best first; a person starting at the home page gets there through the experiment's
description, without the Sort menu, and finds the logged models with their test metrics and the
compare view, where every param has a value. Each step's screenshot is kept as
test-output/screenshots/mlflow-<step>.png."""

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.support.harness import TRAINED_EXPERIMENT, free_port, repo_env, store_uri, venv_bin
from tests.unit.test_ui import KIND

SCREEN = {"width": 1600, "height": 900}
TEST_ACCURACY = '[role="columnheader"][col-id="metrics.`test_accuracy`"]'


def ui_command(port: int, *options: str) -> list[str]:
    return [str(Path(venv_bin()) / "python"), "-m", "mnist_pipeline", "ui", "--port", str(port), *options]


def runs_link(base: str, experiment_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=test-accuracy"


def as_in_a_terminal() -> None:
    """Ctrl-C reaches the command as it does in a terminal: a test run started in the background of a
    script (CI) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def ui(trained_repo, tmp_path_factory):
    """`make ui OPEN=1` on the trained repository, with a browser that writes down what it is asked
    to open; yields (port, its stdout lines, its stderr file, that browser's file). Stopped with
    Ctrl-C, which must end it cleanly and free the port."""
    port, folder = free_port(), tmp_path_factory.mktemp("ui")
    out, err, opened = folder / "stdout", folder / "stderr", folder / "opened"
    browser = folder / "browser"  # Python's webbrowser runs $BROWSER with the link
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {opened}\n')
    browser.chmod(0o755)
    with open(out, "w") as stdout, open(err, "w") as stderr:
        server = subprocess.Popen(
            ui_command(port, "--open"),
            cwd=trained_repo,
            env=repo_env(trained_repo, BROWSER=str(browser)),
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=as_in_a_terminal,
        )
    try:
        deadline = time.monotonic() + 180
        while len(out.read_text().splitlines()) < 2:  # it prints once the UI answers
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"no link printed (exit code {server.poll()}):\n{out.read_text()}{err.read_text()}"
                )
            time.sleep(0.5)
        yield port, out.read_text().splitlines(), err, opened
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            raise AssertionError(f"`ui` still running 60 s after Ctrl-C; its stderr:\n{err.read_text()}") from None
    assert code == 0 and "Traceback" not in err.read_text(), err.read_text()
    with socket.socket() as probe:  # nothing left behind holding the port
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_make_ui_prints_and_opens_the_link_to_the_runs_by_test_accuracy_and_keeps_the_server_quiet(
    ui, trained_repo, page, screenshots
):
    port, lines, err, opened = ui
    experiment = MlflowClient(store_uri(trained_repo)).get_experiment_by_name(TRAINED_EXPERIMENT)
    assert experiment is not None, TRAINED_EXPERIMENT
    link = runs_link(f"http://127.0.0.1:{port}", experiment.experiment_id)
    assert lines == [
        f"MLflow UI on the runs of experiment '{TRAINED_EXPERIMENT}', best test accuracy first (Ctrl-C stops it):",
        link,
    ]
    assert experiment.tags[KIND] == "custom_model_development"
    deadline = time.monotonic() + 30  # the browser is started once the link is printed
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert opened.read_text() == link + "\n"

    page.set_viewport_size(SCREEN)
    page.goto(link)
    runs = runs_of_dvc_repro(trained_repo)
    see_test_accuracy_best_first(page, runs)
    page.screenshot(path=screenshots / "mlflow-link.png")
    # Its chart view: the test metrics first, a bar per run.
    page.locator("label:has(input[value=CHART])").click()
    page.get_by_text("Test metrics", exact=True).wait_for()
    first_chart = page.locator('[data-testid="experiment-view-compare-runs-card"]').first
    page.screenshot(path=screenshots / "mlflow-link-chart.png")
    assert first_chart.inner_text().startswith("test_accuracy"), first_chart.inner_text()
    # No line per request, no start-up banner, no deprecation notices: only warnings and errors.
    assert not re.search(r"GET /|Uvicorn running|DeprecationWarning|Traceback", err.read_text()), err.read_text()


def see_test_accuracy_best_first(page, runs: dict[str, Run]) -> None:
    """The runs table shows each run's test accuracy in a column on screen, highest first."""
    accuracy = {model: run.data.metrics["test_accuracy"] for model, run in runs.items()}
    header = page.locator(TEST_ACCURACY)
    header.wait_for()
    for model, run in runs.items():
        wait_for_cell(page, run.info.run_id, str(accuracy[model]))
    box = header.bounding_box()
    assert box is not None and box["x"] + box["width"] <= SCREEN["width"], box  # not scrolled off to the right
    ranks = {
        model: int(page.locator(f'[row-id="{run.info.run_id}"]').first.get_attribute("row-index"))
        for model, run in runs.items()
    }
    best, worst = sorted(accuracy, key=accuracy.__getitem__, reverse=True)
    assert ranks[best] < ranks[worst]


def test_a_second_ui_on_the_same_port_fails_in_one_line_naming_a_free_one(ui, trained_repo):
    port, *_ = ui
    done = subprocess.run(
        ui_command(port), cwd=trained_repo, env=repo_env(trained_repo), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and done.stdout == ""
    taken = re.fullmatch(
        rf"error: port {port} on 127\.0\.0\.1 is in use by another program; "
        r"pick another: make ui PORT=(\d+)\n",
        done.stderr,
    )
    assert taken, done.stderr
    assert int(taken[1]) > port


def test_with_a_tracking_server_it_prints_the_link_there_and_starts_nothing(ui, trained_repo):
    port, *_ = ui  # the UI is a tracking server too
    server = f"http://127.0.0.1:{port}"
    done = subprocess.run(
        ui_command(free_port()),
        cwd=trained_repo,
        capture_output=True,
        text=True,
        timeout=120,
        env=repo_env(trained_repo, MLFLOW_TRACKING_URI=server),
    )
    experiment = MlflowClient(server).get_experiment_by_name(TRAINED_EXPERIMENT)
    assert experiment is not None, TRAINED_EXPERIMENT
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "MLFLOW_TRACKING_URI is a tracking server, which serves the UI itself; "
        f"the runs of '{TRAINED_EXPERIMENT}', best test accuracy first:",
        runs_link(server, experiment.experiment_id),
    ]


def runs_of_dvc_repro(repo, name: str = TRAINED_EXPERIMENT) -> dict[str, Run]:
    """The two training runs the first `dvc repro` logged (other tests may add runs of their own)."""
    client = MlflowClient(store_uri(repo))
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, name
    found = client.search_runs(
        [experiment.experiment_id], "tags.`dvc.stage` LIKE 'train@%'", order_by=["attributes.start_time ASC"]
    )
    runs: dict[str, Run] = {}
    for run in found:
        runs.setdefault(run.data.tags["model"], run)  # the first repro's run of each model
    assert set(runs) == {"logistic", "mlp"}
    return runs


def scroll_to(page, selector: str) -> None:
    """Scroll the first element `selector` finds into view; the grid redraws its cells as data
    arrives, so one found may be replaced before the scroll: find it again."""
    from playwright.sync_api import Error

    for _ in range(20):
        try:
            page.locator(selector).first.scroll_into_view_if_needed(timeout=10_000)
            return
        except Error as exc:
            if "not attached" not in str(exc):
                raise
            page.wait_for_timeout(250)
    raise AssertionError(f"{selector} kept being redrawn; could not scroll to it")


def wait_for_cell(page, row_id: str, text: str) -> None:
    """Until the table row shows `text` in a cell: the grid draws cells as they scroll into view."""
    page.locator(f'[role="row"][row-id="{row_id}"]').get_by_text(text, exact=True).first.wait_for()


def row_cells(page, row_id: str) -> list[str]:
    """The texts in a table row (the grid draws its pinned and scrolling parts as separate rows)."""
    return "\n".join(page.locator(f'[role="row"][row-id="{row_id}"]').all_inner_texts()).split("\n")


def test_a_person_finds_both_models_test_accuracy_from_the_home_page(ui, trained_repo, page, screenshots):
    port, *_ = ui
    runs = runs_of_dvc_repro(trained_repo)
    accuracy = {model: run.data.metrics["test_accuracy"] for model, run in runs.items()}

    page.set_viewport_size(SCREEN)
    page.goto(f"http://127.0.0.1:{port}/")
    page.get_by_text("Welcome to MLflow").wait_for()
    page.get_by_role(
        "button", name="Close", exact=True
    ).click()  # the assistant panel opens itself: room for the tables
    # MLflow 3 opens experiments in its GenAI view (traces, tokens) until a person picks model
    # training here; the browser remembers the choice.
    page.get_by_text("Model training", exact=True).click()
    page.screenshot(path=screenshots / "mlflow-1-home.png")

    page.get_by_role("link", name="Experiments", exact=True).first.click()
    page.wait_for_url("**/#/experiments")
    page.get_by_role("link", name=TRAINED_EXPERIMENT, exact=True).wait_for()
    page.screenshot(path=screenshots / "mlflow-2-experiments.png")

    page.get_by_role("link", name=TRAINED_EXPERIMENT, exact=True).click()
    page.wait_for_url("**/runs?**")  # the training runs, not the GenAI overview
    for run in runs.values():
        page.get_by_text(run.info.run_name, exact=True).wait_for()
    page.get_by_text("mnist-mlp", exact=True).first.wait_for()  # the registered model beside its run
    page.screenshot(path=screenshots / "mlflow-3-runs.png")

    # MLflow's own table shows no metric (the browser keeps a person's columns and sort, the server
    # cannot set them); the experiment's description above it links to the saved view that does.
    with page.context.expect_page() as opened:  # MLflow opens a description's links in a new tab
        page.get_by_role("link", name="their test accuracy, best first", exact=True).click()
    page = opened.value
    page.set_viewport_size(SCREEN)
    see_test_accuracy_best_first(page, runs)
    page.screenshot(path=screenshots / "mlflow-4-runs-by-test-accuracy.png")

    # The Models tab: the logged models under their model keys, with the test metrics logged against them.
    page.get_by_role("link", name="Models", exact=True).first.click()
    page.wait_for_url("**/models?**")
    client = MlflowClient(store_uri(trained_repo))
    model_ids = {}
    for model, run in runs.items():
        # This run's logged model (other tests may log more models of the same name since).
        [logged] = client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        model_ids[model] = logged.model_id
        page.locator(f'[role="row"][row-id="{logged.model_id}"]').get_by_role("link", name=model, exact=True).wait_for()
    # Scrolled right to the metric columns, as a person does (the header follows the rows).
    scroll_to(page, '[role="gridcell"][col-id*="test_accuracy"]')
    for model, run in runs.items():
        model_id = model_ids[model]
        wait_for_cell(page, model_id, str(accuracy[model]))
        assert {model, run.info.run_name, str(accuracy[model])} <= set(row_cells(page, model_id))
    page.screenshot(path=screenshots / "mlflow-5-models.png")
    page.locator("label:has(input[value=CHART])").click()  # Chart view: a bar per model for each test metric
    chart = page.locator("[data-testid]").filter(has_text=re.compile(r"mnist-test\s*test_accuracy")).last
    chart.wait_for()
    assert {"logistic", "mlp"} <= set(chart.inner_text().split())
    page.screenshot(path=screenshots / "mlflow-6-models-chart.png")

    # Select both runs and compare them: their params line up under the same names.
    page.get_by_role("link", name="Runs", exact=True).first.click()
    for run in runs.values():
        page.get_by_role("row").filter(has_text=run.info.run_name).get_by_role(
            "checkbox", name="Press Space to toggle row selection (unchecked)"
        ).click()
    page.get_by_role("button", name="Compare").click()
    page.get_by_text("Comparing 2 Runs").wait_for()

    def row(name: str) -> list[str]:
        return page.get_by_role("row").filter(has=page.get_by_text(name, exact=True)).first.inner_text().split("\t")

    by_id = {run.info.run_id: run for run in runs.values()}
    columns = [by_id[run_id] for run_id in row("Run ID:")[1:]]  # in the order the page shows them
    for param in ("type", "learning_rate", "epochs", "data.train_size", "activation", "dropout"):
        assert row(param) == [param] + [run.data.params[param] for run in columns]
    assert row("activation")[1 + columns.index(runs["logistic"])] == "none"  # no hidden layer, no activation
    # The parallel-coordinates plot on top draws each run on every param axis: none "unknown".
    axes = page.locator(".js-plotly-plot").first
    axes.wait_for()
    assert "unknown" not in axes.locator("text").all_text_contents()
    page.screenshot(path=screenshots / "mlflow-7-compare-plot.png")
    page.get_by_role("switch", name="Parameters - Show diff only").click()  # what tells them apart
    page.get_by_text("Run details", exact=True).evaluate("heading => heading.scrollIntoView()")  # scroll down to them
    page.screenshot(path=screenshots / "mlflow-8-compare-params.png")
