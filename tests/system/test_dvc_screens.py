"""What a DVC user reads, read the way they read it: `dvc exp show` in a 200-column terminal,
`dvc metrics diff` / `dvc params diff` after a sweep, and `dvc plots show` (its Vega-Lite specs,
and its HTML page rendered in headless Chromium with Vega served from npm, screenshot kept)."""

import functools
import http.server
import json
import re
import shutil
import subprocess
import threading

import pytest

from tests.support.harness import REPO, make_repo, repo_env, sh, small_params

pytestmark = pytest.mark.e2e
MODELS = ("logistic", "mlp")
# The versions `dvc plots show` loads from a CDN (dvc_render.vega.VegaRenderer.SCRIPTS).
VEGA = {
    "vega": ("5.20.2", "vega.min.js"),
    "vega-lite": ("5.2.0", "vega-lite.min.js"),
    "vega-embed": ("6.18.2", "vega-embed.min.js"),
}
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <title>DVC plots</title>
    %s
</head>
<body>
    {plot_divs}
</body>
</html>
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mnist_dir):
    """The small pipeline run once and committed, then one experiment that sweeps an mlp param."""
    params = small_params("screens")
    params["models"]["logistic"]["epochs"] = params["models"]["mlp"]["epochs"] = 2  # a curve, not a dot
    root = make_repo(tmp_path_factory.mktemp("screens"), params, mnist_dir)
    sh(root, "dvc", "repro")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "baseline results")
    sh(root, "dvc", "exp", "run", "-S", "models.mlp.dropout=0.35", "--name", "dropout-035")
    return root


def terminal(repo, *cmd, columns):
    """What the command prints in a terminal `columns` wide (no pager, no colour)."""
    return sh(repo, *cmd, env=repo_env(repo, COLUMNS=str(columns), LINES="50")).stdout


def test_exp_show_at_200_columns_shows_every_models_test_accuracy(repo):
    text = terminal(repo, "dvc", "exp", "show", "--no-pager", columns=200)
    header = next(line for line in text.splitlines() if "Experiment" in line)
    assert "accuracy.logistic" in header and "accuracy.mlp" in header, text
    assert "download.sources" not in text and "[{" not in text  # a list of sources is no column
    assert max(map(len, text.splitlines())) <= 200


def test_exp_show_only_changed_shows_the_swept_param_beside_its_metrics(repo):
    text = terminal(repo, "dvc", "exp", "show", "--no-pager", "--only-changed", columns=200)
    header = next(line for line in text.splitlines() if "Experiment" in line).split()
    assert header[2:7] == ["accuracy.mlp", "log_loss.mlp", "precision.mlp", "recall.mlp", "f1.mlp"], text
    assert "models.mlp.dropout" in header and not any("logistic" in column for column in header)
    row = next(line for line in text.splitlines() if "[dropout-035]" in line)
    assert "0.35" in row.split()


def test_metrics_and_params_diff_fit_a_normal_terminal(repo):
    metrics = terminal(repo, "dvc", "metrics", "diff", "HEAD", "dropout-035", columns=120)
    rows = [line.split() for line in metrics.splitlines()[1:]]
    assert {row[1] for row in rows} == {"accuracy.mlp", "log_loss.mlp", "precision.mlp", "recall.mlp", "f1.mlp"}
    params = terminal(repo, "dvc", "params", "diff", "HEAD", "dropout-035", columns=120)
    assert [line.split() for line in params.splitlines()[1:]] == [["params.yaml", "models.mlp.dropout", "0.2", "0.35"]]
    assert max(map(len, (metrics + params).splitlines())) <= 80


def plot_specs(repo) -> dict[str, dict]:
    """`dvc plots show --json`: plot id → the filled Vega-Lite spec (images → their path)."""
    shown = json.loads(sh(repo, "dvc", "plots", "show", "--json").stdout)["data"]
    return {plot_id: entries[0].get("content", entries[0]) for plot_id, entries in shown.items()}


def test_every_chart_says_what_and_which_model_with_meaningful_axes(repo):
    specs = plot_specs(repo)
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


def test_dvc_plots_page_renders_every_chart(repo, vega_scripts, page, screenshots, tmp_path):
    out = tmp_path / "dvc_plots"
    scripts = "\n    ".join(f'<script src="vega/{name}.js"></script>' for name in VEGA)
    template = tmp_path / "page.html"
    template.write_text(PAGE % scripts)
    sh(repo, "dvc", "plots", "show", "--html-template", str(template), "-o", str(out))
    (out / "vega").mkdir()
    for name, path in vega_scripts.items():
        shutil.copy(path, out / "vega" / f"{name}.js")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        charts = len(re.findall(r"vegaEmbed\(", (out / "index.html").read_text()))
        page.wait_for_function(f"document.querySelectorAll('.vega-embed svg, .vega-embed canvas').length >= {charts}")
        images = page.locator("img")
        assert images.count() == len(MODELS)  # misclassified.png of each model
        assert all(images.nth(i).evaluate("img => img.naturalWidth > 0") for i in range(images.count()))
        page.screenshot(path=screenshots / "dvc-plots.png", full_page=True)
    finally:
        server.shutdown()
        server.server_close()
    assert not errors  # every spec compiled and drew (the titles are checked in the specs above)
