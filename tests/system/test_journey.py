"""A newcomer's first hour, walked on a fresh `git clone` with nothing trained: the README's commands
in the order a newcomer runs them, each screen read the way a person reads it (a terminal 120
columns wide, DVC's pager, the plots page in headless Chromium), on the small configuration.

The published repository is the project with its baseline committed, as the retrain workflow
commits main: dvc.lock and reports/ (metrics, per-class tables, plot data; `cache: false`). The
clone has no DVC cache and no outputs: what it shows before training comes from git alone."""

import fcntl
import functools
import http.server
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import termios
import threading
import time

import pytest

from tests.support.harness import REPO, free_port, make_repo, repo_env, running, sh, small_params
from tests.system.test_ui import SCREEN, runs_of_dvc_repro, see_test_accuracy_best_first, ui_command

pytestmark = pytest.mark.e2e
MODELS = ("mlp", "logistic")
SWEPT = "models.mlp.learning_rate"
# What the experiments page tells a user to run after a sweep: the changed columns, both models'
# accuracy kept beside them, and none of the columns that say nothing about the experiment (when
# and where it ran, the dependencies' hashes).
EXP_SHOW_CHANGED = [
    *("dvc", "exp", "show", "--only-changed", "--keep", "accuracy"),
    *("--drop", r"Created|Executor|.*/|.*\.yaml"),
]
# The versions `dvc plots show` loads from a CDN (dvc_render.vega.VegaRenderer.SCRIPTS).
VEGA = {
    "vega": ("5.20.2", "vega.min.js"),
    "vega-lite": ("5.2.0", "vega-lite.min.js"),
    "vega-embed": ("6.18.2", "vega-embed.min.js"),
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def published(tmp_path_factory, mnist_dir):
    """The project as a newcomer finds it: trained once on the small configuration, with dvc.lock and
    reports/ committed (two epochs, so a learning curve is a line, not a dot)."""
    params = small_params("journey")
    for model in params["models"].values():
        model["epochs"] = 2
    root = make_repo(tmp_path_factory.mktemp("published"), params, mnist_dir)
    sh(root, "dvc", "repro")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "baseline: dvc.lock and reports/")
    return root


@pytest.fixture(scope="module")
def clone(published, tmp_path_factory):
    """A newcomer's `git clone`: no outputs, no DVC cache, no MLflow store."""
    folder = tmp_path_factory.mktemp("newcomer") / "mnist-pipeline"
    sh(published.parent, "git", "clone", "-q", str(published), str(folder))
    return folder


@pytest.fixture(scope="module")
def journey(clone, screenshots):
    """The walk, in order; returns each screen it showed (the terminal ones also kept as text beside
    the screenshots)."""
    screens: dict = {}
    screens = {"files": sorted(p.name for p in clone.iterdir())}
    # Before any training: the committed baseline.
    screens["metrics before"] = json.loads(sh(clone, "dvc", "metrics", "show", "--json").stdout)
    screens["exp show before"] = paged(clone, "dvc", "exp", "show", columns=120)
    screens["plots before"] = json.loads(sh(clone, "dvc", "plots", "show", "--json").stdout)
    # The first run, then what it changed.
    sh(clone, "dvc", "repro")
    screens["status after repro"] = sh(clone, "git", "status", "--short").stdout
    screens["metrics diff"] = terminal(clone, "dvc", "metrics", "diff", "--all", columns=120)
    screens["plots diff"] = json.loads(sh(clone, "dvc", "plots", "diff", "main", "--json").stdout)
    # A one-parameter sweep, queued and run by two workers, then read.
    sh(clone, "dvc", "exp", "run", "--queue", "-S", f"{SWEPT}=0.001,0.004")
    sh(clone, "dvc", "exp", "run", "--run-all", "-j", "2")
    screens["exp show changed"] = terminal(clone, *EXP_SHOW_CHANGED, "--no-pager", columns=120)
    screens["compare"] = terminal(clone, "python", "-m", "mnist_pipeline", "compare", "--model", "mlp", columns=120)
    sh(clone, "python", "-m", "mnist_pipeline", "ci-report", "--base", "HEAD", "--output", "report.md")
    screens["ci-report"] = (clone / "report.md").read_text()
    for name in ("exp show before", "metrics diff", "exp show changed", "compare", "ci-report"):
        (screenshots / f"journey-{name.replace(' ', '-')}.txt").write_text(screens[name])
    return screens


def terminal(repo, *cmd, columns):
    """What the command prints in a terminal `columns` wide (no pager, no colour)."""
    return sh(repo, *cmd, env=repo_env(repo, COLUMNS=str(columns), LINES="50")).stdout


def paged(repo, *cmd, columns) -> str:
    """What a terminal `columns` wide shows of a command DVC pages: in a terminal, DVC draws the whole
    table and pipes it to `less -S`, which cuts every line at the screen's edge. A pseudo-terminal
    makes DVC page; PAGER=cat and the cut stand in for less."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = repo_env(repo, COLUMNS=str(columns), LINES="50", PAGER="cat", TERM="xterm")
    process = subprocess.Popen(cmd, cwd=repo, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command ended and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 0
    text = ANSI.sub("", b"".join(chunks).decode()).replace("\r", "")
    return "\n".join(line[:columns] for line in text.splitlines())


def row(text: str, label: str) -> list[str]:
    return next(line for line in text.splitlines() if label in line).split()


def test_a_fresh_clone_shows_the_committed_baseline_before_any_training(journey):
    screens = journey
    assert "data" not in screens["files"] and "models" not in screens["files"]  # nothing trained, nothing pulled
    shown = screens["metrics before"][""]["data"]["reports/metrics.json"]["data"]
    assert set(shown) == {"accuracy", "log_loss"}
    assert all(0 < shown["accuracy"][model] <= 1 for model in MODELS)
    # In a 120-column terminal, the main row holds both models' test accuracy, as committed.
    text = screens["exp show before"]
    header = row(text, "Experiment")
    assert header[:4] == ["Experiment", "Created", "accuracy.mlp", "accuracy.logistic"], text
    main = row(text, "main")
    assert main[3:5] == [str(shown["accuracy"]["mlp"]), str(shown["accuracy"]["logistic"])], text
    assert "!" not in main
    plots = screens["plots before"]
    assert not plots.get("errors"), plots
    for model in MODELS:
        curves = plots["data"][f"reports/history/{model}.csv"][0]["content"]
        assert len(curves["data"]["values"]) >= 2  # both epochs of the committed run


def test_after_the_first_run_only_the_baseline_files_differ_and_dvc_compares_with_them(journey):
    screens = journey
    changed = {line[3:] for line in screens["status after repro"].splitlines()}
    # The models' hashes (and, on another CPU, the scores): what the README says to expect.
    assert changed and changed <= {"dvc.lock"} | {
        line[3:] for line in screens["status after repro"].splitlines() if line[3:].startswith("reports/")
    }
    table = [line.split() for line in screens["metrics diff"].splitlines()[1:]]
    assert {line[1] for line in table} == {f"{score}.{model}" for score in ("accuracy", "log_loss") for model in MODELS}
    assert all(re.fullmatch(r"[0-9.]+", line[2]) for line in table), screens["metrics diff"]  # HEAD has numbers
    overlaid = screens["plots diff"]["data"]["reports/history/mlp.csv"][0]["content"]["data"]["values"]
    assert {value["rev"] for value in overlaid} == {"main", "workspace"}


def test_after_a_sweep_the_swept_param_sits_beside_both_accuracies_at_120_columns(journey):
    screens = journey
    text = screens["exp show changed"]
    assert max(map(len, text.splitlines())) <= 120, text
    header = row(text, "Experiment")
    assert {"accuracy.mlp", "accuracy.logistic", SWEPT} <= set(header) and "…" not in text, text
    quoted = (REPO / "docs" / "experiments.md").read_text().split(EXP_SHOW_CHANGED[-1])[-1]
    assert row(quoted, "Experiment") == header, quoted  # the page quotes this screen
    rates = sorted(float(row(text, label)[header.index(SWEPT) + 2]) for label in ("├──", "└──"))
    assert rates == [0.001, 0.004], text
    compare = screens["compare"]
    assert max(map(len, compare.splitlines())) <= 120, compare
    assert "learning_rate" in compare.splitlines()[0] and "None" not in compare, compare


def test_ci_report_against_head_has_the_base_metrics(journey):
    screens = journey
    report = screens["ci-report"]
    assert "could not read the base's metrics" not in report, report
    metrics = report.split("### Metrics vs the base")[1].split("###")[0]
    # On this machine the scores are the baseline's: DVC read both sides and found no difference.
    assert "No metric differs from the base." in metrics or all(
        re.fullmatch(r"[0-9.]+", cells[3].strip()) for cells in (line.split("|") for line in metrics.splitlines()[3:])
    ), report


def plot_specs(repo) -> dict[str, dict]:
    """`dvc plots show --json`: plot id → the filled Vega-Lite spec (images → their path)."""
    shown = json.loads(sh(repo, "dvc", "plots", "show", "--json").stdout)["data"]
    return {plot_id: entries[0].get("content", entries[0]) for plot_id, entries in shown.items()}


@pytest.mark.usefixtures("journey")
def test_every_chart_says_what_and_which_model_with_meaningful_axes(clone):
    specs = plot_specs(clone)
    vega = {plot_id: spec for plot_id, spec in specs.items() if "$schema" in spec}
    titles = [spec["title"]["text"] for spec in vega.values()]
    assert len(titles) == len(set(titles)) == 1 + 3 * len(MODELS), titles

    counts = vega["reports/data/class_counts.csv"]
    assert counts["encoding"]["y"] == {**counts["encoding"]["y"], "field": "digit", "type": "nominal"}
    assert counts["encoding"]["x"]["type"] == "quantitative" and counts["encoding"]["x"]["title"] == "training images"

    for model in MODELS:
        curves = vega[f"reports/history/{model}.csv"]
        assert curves["title"]["text"].startswith(f"{model}: learning curves")
        panels = {panel["title"]: panel["encoding"] for panel in curves["hconcat"]}
        assert set(panels) == {"Loss (cross-entropy)", "Accuracy"}  # each on its own axis
        assert {p["y"]["title"] for p in panels.values()} == {"loss", "accuracy"}
        assert all(p["x"]["field"] == "epoch" for p in panels.values())

        per_class = vega[f"reports/eval/{model}/per_class.csv"]
        assert per_class["title"]["text"].startswith(f"{model}: precision and recall per digit")
        assert per_class["encoding"]["y"]["field"] == "digit" and per_class["encoding"]["y"]["type"] == "nominal"
        assert {row["digit"] for row in per_class["data"]["values"]} == {str(d) for d in range(10)}

        confusion = vega[f"reports/eval/{model}/predictions.csv"]
        assert confusion["title"]["text"] == f"{model}: confusion matrix (test set)"
        assert f"reports/eval/{model}/misclassified.png" in specs


@pytest.fixture(scope="session")
def vega_scripts(tmp_path_factory) -> dict[str, str]:
    """Vega, Vega-Lite and Vega-Embed from npm (the page DVC writes loads them from a CDN, which
    this machine cannot reach); installed once into test-output/node and reused."""
    folder = REPO / "test-output" / "node"
    paths = {name: folder / "node_modules" / name / "build" / file for name, (_, file) in VEGA.items()}
    if not all(path.is_file() for path in paths.values()):
        npm = shutil.which("npm")
        if not npm:
            pytest.fail("npm is missing: install Node.js (apt-get install nodejs npm) to render DVC's plots page")
        folder.mkdir(parents=True, exist_ok=True)
        packages = [f"{name}@{version}" for name, (version, _) in VEGA.items()]
        done = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(folder),
                "--no-save",
                "--no-package-lock",
                "--no-audit",
                "--no-fund",
                "--legacy-peer-deps",
                *packages,
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    return {name: str(path) for name, path in paths.items()}


def serve(folder):
    """A quiet HTTP server on 127.0.0.1 for `folder`; returns it (shut it down after)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def open_plots_page(page, folder, screenshot, *, online: bool) -> list[str]:
    """`folder`/index.html in Chromium, every request off 127.0.0.1 refused (as on a machine with no
    open web); returns the page's errors."""
    server = serve(folder)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]).*"), lambda route: route.abort())
    try:
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        if online:
            charts = len(re.findall(r"vegaEmbed\(", (folder / "index.html").read_text()))
            page.wait_for_function(
                f"document.querySelectorAll('.vega-embed svg, .vega-embed canvas').length >= {charts}"
            )
        else:
            page.wait_for_load_state("load")
        images = page.locator("img")
        assert images.count() == len(MODELS)  # misclassified.png of each model
        assert all(images.nth(i).evaluate("img => img.naturalWidth > 0") for i in range(images.count()))
        page.screenshot(path=screenshot, full_page=True)
    finally:
        server.shutdown()
        server.server_close()
    return errors


@pytest.mark.usefixtures("journey")
def test_the_plots_page_draws_every_chart_when_vega_loads(clone, vega_scripts, page, screenshots, tmp_path):
    """The project's page template (.dvc/config's plots.html_template) with Vega served beside it."""
    out = tmp_path / "dvc_plots"
    scripts = "\n    ".join(f'<script src="vega/{name}.js"></script>' for name in VEGA)
    template = tmp_path / "page.html"
    template.write_text((REPO / ".dvc" / "plots" / "page.html").read_text().replace("{scripts}", scripts))
    sh(clone, "dvc", "plots", "show", "--html-template", str(template), "-o", str(out))
    (out / "vega").mkdir()
    for name, path in vega_scripts.items():
        shutil.copy(path, out / "vega" / f"{name}.js")
    errors = open_plots_page(page, out, screenshots / "dvc-plots.png", online=True)
    assert not errors  # every spec compiled and drew (the titles are checked in the specs above)
    assert page.locator("#no-vega").is_hidden()


@pytest.mark.usefixtures("journey")
def test_offline_the_plots_page_says_why_it_draws_no_chart(clone, page, screenshots):
    """`dvc plots show` as a user runs it (the committed template, Vega from the CDN), with no web."""
    shown = sh(clone, "dvc", "plots", "show").stdout
    assert shown.strip().endswith("dvc_plots/index.html"), shown
    open_plots_page(page, clone / "dvc_plots", screenshots / "dvc-plots-offline.png", online=False)
    note = page.locator("#no-vega")
    assert note.is_visible() and "Vega did not load" in note.inner_text()
    assert "dvc plots show --json" in note.inner_text()


@pytest.mark.usefixtures("journey")
def test_the_link_make_ui_prints_lands_on_both_models_test_accuracy(clone, page, screenshots, tmp_path):
    """`make ui`'s command in the clone; the link it prints, followed in Chromium: the runs of the
    first `dvc repro` and of the sweep, each with its test accuracy in a column on screen, best first."""
    port, log = free_port(), tmp_path / "ui.log"
    with running(ui_command(port), f"http://127.0.0.1:{port}/health", cwd=clone, env=repo_env(clone), log=log):
        deadline = time.monotonic() + 30
        while not (links := re.findall(r"^http://\S+$", log.read_text(), re.MULTILINE)):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        page.set_viewport_size(SCREEN)
        page.goto(links[0])
        runs = runs_of_dvc_repro(clone, "journey")
        see_test_accuracy_best_first(page, runs)
        page.screenshot(path=screenshots / "journey-mlflow-link.png")
