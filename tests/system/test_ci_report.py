"""`ci-report` for real, in a throwaway git repo against each kind of base, its report read the way
a person reads it; the workflow around it passes actionlint."""

import csv
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.tools.ci_report import MARKER, dvc_diff, run_link
from mnist_pipeline.tracking.run_file import read_run_id, write_run_file
from tests.support.harness import (
    REPO,
    SCREENSHOTS,
    make_repo,
    repo_env,
    sh,
    small_params,
    stages_run,
    tracking_server,
    write_params,
)


@dataclass
class Report:
    """A report read as a person reads it: heading, summary, notes, and each table by its rows."""

    heading: str
    summary: str
    gates: list[str]  # the registry gates' paragraph: its title, then one line per changed model
    sides: str  # what each side of the tables is
    notes: list[str]
    stages: dict[str, str]
    params: dict[str, tuple[str, str]]  # "models.mlp.learning_rate" → (base, workspace)
    metrics: dict[tuple[str, str], tuple[str, ...]]  # (path, metric) → (base, workspace, change)
    sections: dict[str, str]  # "### mlp (retrained)" → its text

    @classmethod
    def read(cls, text: str) -> "Report":
        assert text.startswith(MARKER + "\n"), text[:200]
        parts = re.split(r"^(### .*)$", text, flags=re.MULTILINE)
        top, sections = parts[0], dict(zip(parts[1::2], parts[2::2], strict=True))
        lines = [line for line in top.splitlines()[1:] if line]
        gates = [line for line in lines if line.startswith(("**Registry gates", "- "))]
        lines = [line for line in lines if line not in gates]
        tables = {name: rows(body) for name, body in sections.items()}
        params = {cells[1]: (cells[2], cells[3]) for cells in tables["### Parameters changed"]}
        metrics = {(cells[0], cells[1]): tuple(cells[2:]) for cells in tables["### Metrics vs the base"]}
        assert bool(params) == ("No parameter differs from the base." not in sections["### Parameters changed"])
        assert bool(metrics) == ("No metric differs from the base." not in sections["### Metrics vs the base"])
        return cls(
            heading=lines[0],
            summary=lines[1],
            gates=gates,
            sides=lines[2],
            notes=[line for line in lines if line.startswith("> ")],
            stages={cells[0].strip("`"): cells[1] for cells in tables["### Stages"]},
            params=params,
            metrics=metrics,
            sections={k: v for k, v in sections.items() if k.split()[1] in MODELS},
        )


def sections(markdown: str) -> dict[str, str]:
    """Each "### " heading → the text under it."""
    parts = re.split(r"^(### .*)$", markdown, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def rows(markdown: str) -> list[list[str]]:
    """The body rows of the first Markdown table in `markdown`, cell by cell."""
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]


MODELS = ("logistic", "mlp")


def headline(repo: Path, model: str) -> dict[str, float]:
    return json.loads((Layout(repo).eval_dir(model) / "metrics.json").read_text())[model]


def ci_report(repo: Path, base: str, *args: str) -> tuple[Report, list[str]]:
    """The report for `base`, and the stages `dvc repro` ran meanwhile."""
    done = sh(repo, "python", "-m", "mnist_pipeline", "ci-report", "--base", base, "--output", "out/report.md", *args)
    report = (repo / "out/report.md").read_text()
    assert "nan" not in report and "None" not in report
    return Report.read(report), stages_run(done.stderr)


@pytest.mark.e2e
def test_ci_report_compares_the_same_two_states_for_every_base(tmp_path, own_trained_repo):
    """One small repository, a sequence of commits: a param change committed without its dvc.lock
    (against HEAD, against its parent, a branch against main), an uncommitted change, and going
    back, which DVC's run cache restores. Params and metrics always come from the same two dvc.lock
    states: a param differs exactly when the metrics do."""
    repo = own_trained_repo  # trained, its baseline committed on main as CI commits it
    sh(repo, "git", "checkout", "-qb", "faster-mlp")
    baseline = sh(repo, "git", "rev-parse", "--short", "HEAD").stdout.strip()
    before = {m: headline(repo, m) for m in MODELS}
    base_run = read_run_id(Layout(repo).model_dir("mlp"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    old_rate = str(params["models"]["mlp"]["learning_rate"])

    # A commit that changes an mlp param but not dvc.lock, as a PR's commit does; against HEAD,
    # whose params.yaml already holds the new value but whose dvc.lock (and metrics) do not.
    params["models"]["mlp"]["learning_rate"] = 0.01
    write_params(repo, params)
    sh(repo, "git", "commit", "-qam", "mlp: learning rate 0.01")
    head = sh(repo, "git", "rev-parse", "--short", "HEAD").stdout.strip()
    report, ran = ci_report(repo, "HEAD")
    assert ran == ["check_params", "train@mlp", "evaluate@mlp", "summarize"]
    assert report.heading == f"## Retrain report: workspace (HEAD `{head}`) vs `HEAD` (`{head}`)"
    assert report.summary == "**Retrained:** mlp."
    assert report.sides == (
        "Parameters and metrics on each side are as its `dvc.lock` records them: the base's as "
        f"committed in `HEAD` (`{head}`), the workspace's after this `dvc repro`."
    )
    assert report.stages == {
        "check_params": "ran",
        "download": "up to date",
        "preprocess": "up to date",
        "train@logistic": "up to date",
        "train@mlp": "ran",
        "evaluate@logistic": "up to date",
        "evaluate@mlp": "ran",
        "summarize": "ran",
    }
    assert report.params == {"models.mlp.learning_rate": (old_rate, "0.01")}
    assert report.notes == [
        f"> `HEAD` (`{head}`) changed its params without a `dvc repro` "
        "(`models.mlp.learning_rate`): its `dvc.lock` and metrics are still those of the values "
        "before, which the base column shows."
    ]
    after = headline(repo, "mlp")
    assert after["accuracy"] != before["mlp"]["accuracy"]
    old, new, change = report.metrics["reports/metrics.json", "accuracy.mlp"]
    assert (float(old), float(new)) == (before["mlp"]["accuracy"], after["accuracy"])
    assert float(change) == pytest.approx(after["accuracy"] - before["mlp"]["accuracy"], abs=1e-4)
    assert {metric.split(".")[1] for _, metric in report.metrics} == {"mlp"}  # logistic did not change
    assert list(report.sections) == ["### mlp (retrained)"]
    section = report.sections["### mlp (retrained)"]
    run_id = read_run_id(Layout(repo).model_dir("mlp"))
    assert run_id != base_run and f"MLflow run: `{run_id}` in the local store" in section
    assert f"Test accuracy {after['accuracy']:.4f}, macro F1 " in section
    with open(Layout(repo).eval_dir("mlp") / "per_class.csv", newline="") as f:
        per_class = list(csv.DictReader(f))
    assert [r[:3] for r in rows(section)] == [
        [r["digit"], f"{float(r['precision']):.4f}", f"{float(r['recall']):.4f}"] for r in per_class
    ]
    link = re.search(r"!\[mlp confusion matrix\]\(([^)]+)\)", section)
    assert link, section
    image = link.group(1)
    assert (repo / "out" / image).resolve() == (Layout(repo).eval_dir("mlp") / "confusion_matrix.png").resolve()
    first = report

    # The same commit against its parent, and the branch against main: the same two states, so
    # the same tables; nothing left to retrain.
    for base in ("HEAD~1", "main"):
        report, ran = ci_report(repo, base, "--no-embed-images")
        assert ran == []
        assert report.heading == f"## Retrain report: workspace (HEAD `{head}`) vs `{base}` (`{baseline}`)"
        assert report.summary == "**Nothing to retrain: every stage is up to date.**"
        assert (report.params, report.metrics, report.notes, report.sections) == (first.params, first.metrics, [], {})

    # An uncommitted change against HEAD, whose dvc.lock now holds the new learning rate.
    sh(repo, "git", "commit", "-qam", "mlp: results")
    head = sh(repo, "git", "rev-parse", "--short", "HEAD").stdout.strip()
    committed = params["models"]["logistic"]["l2"]
    params["models"]["logistic"]["l2"] = 0.01
    write_params(repo, params)
    report, ran = ci_report(repo, "HEAD")
    assert ran == ["check_params", "train@logistic", "evaluate@logistic", "summarize"]
    assert report.heading == f"## Retrain report: workspace (HEAD `{head}` + uncommitted changes) vs `HEAD` (`{head}`)"
    assert report.summary == "**Retrained:** logistic."
    assert report.params == {"models.logistic.l2": (str(committed), "0.01")} and report.notes == []
    assert {metric.split(".")[1] for _, metric in report.metrics} == {"logistic"}
    assert list(report.sections) == ["### logistic (retrained)"]

    # Back to HEAD's params: DVC's run cache restores logistic's model; nothing is trained. Its
    # evaluation runs again (seconds, the same scores): all of evaluate's outputs are `cache: false`,
    # committed with dvc.lock, and DVC restores a run only where those already match.
    sh(repo, "git", "checkout", "params.yaml")
    report, ran = ci_report(repo, "HEAD")
    assert ran == ["check_params", "evaluate@logistic"]
    assert report.summary == "**Restored from DVC's run cache, not trained again:** logistic."
    assert report.stages["train@logistic"] == "restored from DVC's run cache"
    assert (report.params, report.metrics) == ({}, {})
    assert list(report.sections) == ["### logistic (restored)"]
    assert "MLflow run (the run that trained it earlier): `" in report.sections["### logistic (restored)"]

    # Without the DVC cache (and no remote) the base's metrics are still read: reports/ is committed
    # with dvc.lock (`cache: false`), so git alone holds them. (Not through a whole ci-report: its
    # `dvc repro` would first retrain every model, cache gone.)
    shutil.move(repo / ".dvc/cache", tmp_path / "cache")
    table, unreadable = dvc_diff(repo, "metrics", "main")
    assert not unreadable and rows(table) and all(re.fullmatch(r"[0-9.]+", row[2]) for row in rows(table)), table


@pytest.mark.e2e
def test_a_digit_that_falls_past_the_gate_fails_ci_and_keeps_the_champion(own_trained_repo):
    """Issue 23, for real: a learning rate of 0.01 instead of 0.002 (400 images, one epoch) more than
    doubles the small MLP's test accuracy, but one digit's recall falls by more than registry.max_digit_drop.
    Nothing is edited by hand: both sides are what the pipeline wrote, the base's reports/ as committed.
    The registry keeps its champion, the report's first lines name the gate and the digit, and
    --fail-on-regression exits 3 naming it, with the report written."""
    repo = own_trained_repo  # the small pipeline trained, its baseline committed
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["mlp"]["learning_rate"] = 0.01
    write_params(repo, params)
    sh(repo, "git", "commit", "-qam", "mlp: learning rate 0.01")

    done = sh(
        repo, "python", "-m", "mnist_pipeline", "ci-report", "--base", "HEAD~1", "--output", "out/report.md",
        "--fail-on-regression", check=False,
    )  # fmt: skip
    assert stages_run(done.stderr) == ["check_params", "train@mlp", "evaluate@mlp", "summarize"]
    report = Report.read((repo / "out/report.md").read_text())
    base = sh(repo, "git", "show", "HEAD~1:reports/eval/mlp/per_class.csv").stdout
    old, new = (
        list(csv.DictReader(text.splitlines()))
        for text in (base, (repo / "reports/eval/mlp/per_class.csv").read_text())
    )
    drop, digit = max((float(o["recall"]) - float(n["recall"]), int(o["digit"])) for o, n in zip(old, new, strict=True))
    before = json.loads(sh(repo, "git", "show", "HEAD~1:reports/eval/mlp/metrics.json").stdout)["mlp"]["accuracy"]
    after = headline(repo, "mlp")["accuracy"]
    assert after > before and drop > 0.02  # the case: better overall, one digit worse
    fall = f"digit {digit} recall {float(old[digit]['recall']):.4f} → {float(new[digit]['recall']):.4f} ({-drop:+.4f})"
    assert report.gates[0].startswith("**Registry gates** (`registry` in params.yaml)")
    assert report.gates[1].startswith(f"- **mlp fails:** {fall}, more than registry.max_digit_drop 0.02")
    assert done.returncode == 3
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: mlp fails the registry's gates against HEAD~1: {fall}, more than registry.max_digit_drop 0.02"
        )
    )
    # The evaluate stage judged it against the champion the baseline registered, with the same rule.
    assert f"mlp: not registered: {fall}, more than registry.max_digit_drop 0.02" in done.stderr
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    assert [str(v.version) for v in client.search_model_versions("name = 'mnist-mlp'")] == ["1"]

    # Without the flag the same report, and exit 0 (a push to main publishes it and carries on).
    done = sh(repo, "python", "-m", "mnist_pipeline", "ci-report", "--base", "HEAD~1", "--output", "out/again.md")
    assert Report.read((repo / "out/again.md").read_text()).gates == report.gates


def test_ci_report_names_an_unknown_base_before_any_work(tmp_path, mnist_dir):
    repo = make_repo(tmp_path / "repo", small_params("ci"), mnist_dir)
    done = sh(repo, "python", "-m", "mnist_pipeline", "ci-report", "--base", "no-such-branch", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: --base no-such-branch: no such commit")
    assert not (repo / "reports").exists()


def test_ci_report_checks_a_damaged_base_before_any_work(tmp_path, mnist_dir):
    """A base branch whose dvc.lock is damaged (`printf 'stages: [x\\n' > dvc.lock`, committed). Before:
    `dvc repro` trained every model, then a 50-line yaml ParserError traceback and no report."""
    repo = make_repo(tmp_path / "repo", small_params("ci"), mnist_dir)
    sh(repo, "git", "checkout", "-qb", "damaged")
    (repo / "dvc.lock").write_text("stages: [x\n")
    sh(repo, "git", "add", "dvc.lock")
    sh(repo, "git", "commit", "-qm", "damaged dvc.lock")
    sh(repo, "git", "checkout", "-q", "-")
    before = sorted(p.name for p in repo.iterdir())

    done = sh(repo, "python", "-m", "mnist_pipeline", "ci-report", "--base", "damaged", "--output", "r.md", check=False)
    tree = sh(repo, "python", "-m", "mnist_pipeline", "ci-report", "--base", "HEAD^{tree}", check=False)

    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: --base damaged: its dvc.lock is not valid YAML (line 2: expected ',' or ']', but got "
        "'<stream end>'); nothing was run: repair dvc.lock in a commit on damaged (see git show damaged:dvc.lock) "
        "or compare with another base"
    ]
    assert tree.returncode == 1 and tree.stderr.splitlines() == [
        "error: --base HEAD^{tree}: names a tree, not a commit; name a branch, tag or commit"
    ]
    # No stage ran: no data, no dvc.lock, no MLflow store, no report.
    assert sorted(p.name for p in repo.iterdir()) == before


@pytest.mark.slow  # starts an MLflow server
def test_run_link_points_at_the_servers_ui_without_credentials(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    with tracking_server(tmp_path, f"sqlite:///{tmp_path / 'server.db'}", None, "--workers", "1") as url:
        client = MlflowClient(url)
        experiment_id = client.create_experiment("links")
        run_id = client.create_run(experiment_id).info.run_id
        write_run_file(tmp_path, run_id)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url.replace("http://", "http://ci:s3cret@") + "/")
        link = run_link(tmp_path, tmp_path)
    assert link == f"[`{run_id}`]({url}/#/experiments/{experiment_id}/runs/{run_id})"


WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"
CHARTS_URL = "https://github.com/owner/repo/raw/ci-report-images/runs/7-1"
CHARTS = ("mlp-learning-curves.png", "mlp-per-digit.png")


def looked_at(png: Path) -> dict[str, float]:
    """What a glance at a picture tells: its size, how much of it is not white, how many colours,
    and how many pixels are blue or orange, Vega's first two colours (training and validation;
    precision and recall), which points drawn half-transparent blend with white or each other."""
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    red, blue = pixels[:, 0], pixels[:, 2]
    return {
        "width": image.width,
        "height": image.height,
        "ink": float((pixels != 255).any(axis=1).mean()),
        "colours": len(np.unique(pixels, axis=0)),
        "blue": int((blue - red > 40).sum()),
        "orange": int((red - blue > 80).sum()),
    }


def publish_step(repo: Path, run: str) -> subprocess.CompletedProcess:
    """The workflow's step that publishes the charts, its script run as GitHub runs it (bash -eo
    pipefail), with the variables the runner and the job's env give it."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["retrain"]["steps"]
    script = repo.parent / "publish.sh"
    script.write_text(next(step["run"] for step in steps if step.get("name", "").startswith("Publish the charts")))
    env = repo_env(
        repo,
        CHARTS_URL=CHARTS_URL.replace("7-1", run),
        RUNNER_TEMP=str(repo.parent),
        GITHUB_RUN_ID=run.split("-")[0],
        GITHUB_REF_NAME="pr",
    )
    return sh(repo, "bash", "--noprofile", "--norc", "-eo", "pipefail", str(script), env=env)


def branch_files(remote: Path) -> dict[str, bytes]:
    listing = sh(remote, "git", "ls-tree", "-r", "--name-only", "ci-report-images").stdout.split()
    return {path: sh_bytes(remote, "git", "show", f"ci-report-images:{path}") for path in listing}


def sh_bytes(repo: Path, *cmd: str) -> bytes:
    return subprocess.run(cmd, cwd=repo, capture_output=True, check=True).stdout


@pytest.mark.e2e
def test_the_report_shows_charts_of_the_pr_against_the_base_which_ci_publishes(tmp_path, own_trained_repo):
    """A PR that trains mlp longer: a real ci-report draws mlp's learning curves and per-digit
    scores from `dvc plots diff`, links them at the URL the workflow's step then pushes them to, and
    a refused push leaves the files named, as a fork's report names them, instead of broken images."""
    repo = own_trained_repo  # one epoch each, its baseline committed: reports/ is in git, the base's plot data
    sh(repo, "git", "checkout", "-qb", "pr")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["mlp"]["epochs"] = 3
    write_params(repo, params)
    sh(repo, "git", "commit", "-qam", "mlp: 3 epochs")

    report, ran = ci_report(repo, "main", "--no-embed-images", "--image-url-prefix", CHARTS_URL)
    assert "train@mlp" in ran and "train@logistic" not in ran and report.summary == "**Retrained:** mlp."
    text = (repo / "out/report.md").read_text()
    # Only mlp changed: logistic's curves and scores are the base's, so it has no chart.
    assert dict(re.findall(r"^!\[([^\]]+)\]\((\S+)\)$", text, flags=re.MULTILINE)) == {
        "mlp: learning curves (training and validation)": f"{CHARTS_URL}/{CHARTS[0]}",
        "mlp: precision and recall per digit (test set)": f"{CHARTS_URL}/{CHARTS[1]}",
    }
    assert text.index("### Metrics vs the base") < text.index("### Charts") < text.index("### mlp (retrained)")
    folder = repo / "out/report-charts"
    assert sorted(p.name for p in folder.iterdir()) == sorted(CHARTS)
    kept = SCREENSHOTS.parent / "charts"  # for a person to look at after the run
    kept.mkdir(parents=True, exist_ok=True)
    for name in CHARTS:
        shutil.copy(folder / name, kept / name)
        seen = looked_at(folder / name)
        # Readable in a PR comment (shown up to about 880 pixels wide), drawn rather than blank, and
        # both series there (training and validation; precision and recall).
        assert seen["width"] >= 1000 and seen["height"] >= 500, seen
        assert seen["ink"] > 0.03 and seen["colours"] > 100, seen
        assert seen["blue"] > 500 and seen["orange"] > 500, seen

    # The workflow's step pushes them where the report links them (the URL's path after the branch),
    # made on first use; the next run's folder goes on top, the first one's kept.
    remote = tmp_path / "origin.git"
    sh(tmp_path, "git", "init", "-q", "--bare", str(remote))
    sh(repo, "git", "remote", "add", "origin", str(remote))
    shutil.copytree(repo / "out", repo / "ci-report")  # where the workflow writes the report
    publish_step(repo, "7-1")
    publish_step(repo, "8-1")
    published = branch_files(remote)
    assert published == {
        f"runs/{run}/{name}": (folder / name).read_bytes() for run in ("7-1", "8-1") for name in CHARTS
    }
    assert sh(remote, "git", "log", "--format=%s", "ci-report-images").stdout.split("\n")[:2] == [
        "Charts of run 8 (pr)",
        "Charts of run 7 (pr)",
    ]

    # A remote that refuses the push: the step still ends well, and the report names the files.
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho refused >&2\nexit 1\n")
    hook.chmod(0o755)
    done = publish_step(repo, "7-1")  # the run whose URL the report links
    assert "::warning::could not push the charts to the ci-report-images branch" in done.stdout
    fallback = (repo / "ci-report/report.md").read_text()
    assert "![" not in fallback and CHARTS_URL not in fallback

    # … as a fork's report does, which has no URL to link them at.
    command = ["python", "-m", "mnist_pipeline", "ci-report", "--base", "main", "--no-embed-images"]
    sh(repo, *command, "--output", "ci-report/report.md")
    fork = (repo / "ci-report/report.md").read_text()
    charts = "### Charts: the workspace against the base"
    assert sections(fallback)[charts].strip() == sections(fork)[charts].strip()
    assert "mlp: learning curves (training and validation): `ci-report/report-charts/mlp-learning-curves.png`." in fork

    # A template Vega-Lite cannot draw: one line naming the plot and the fix; nothing written.
    template = repo / ".dvc/plots/per_class.json"
    template.write_text(template.read_text().replace('"mark": {"type": "point"', '"mark": {"type": "no-such-mark"'))
    done = sh(repo, *command, "--output", "broken/report.md", check=False)
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: cannot draw the chart of reports/eval/mlp/per_class.csv (Vega-Lite to PNG conversion failed: "
        )
    )
    assert done.stderr.strip().splitlines()[-1].endswith("fix its template in .dvc/plots; no report was written")
    assert not (repo / "broken/report.md").exists() and not (repo / "broken/report-charts").exists()
