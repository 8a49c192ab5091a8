"""The ci-report command: `dvc repro` what changed, then write a Markdown report of what ran and
what it did to the parameters and metrics against a base revision. CI posts the file as a job
summary and a PR comment; anyone can run the same command locally."""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from mnist_pipeline.core.atomic import write_text
from mnist_pipeline.core.command import layout_of
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import load_params
from mnist_pipeline.tools.report_charts import report_charts
from mnist_pipeline.tracking.git import git_dirty, git_output
from mnist_pipeline.tracking.run_file import read_run_id

# Hidden in rendered Markdown; CI finds its own PR comment by it and edits it in place.
MARKER = "<!-- mnist-pipeline:ci-report -->"
NOTHING_TO_RETRAIN = "Nothing to retrain: every stage is up to date."
RESTORED = "restored from DVC's run cache"
# What `dvc repro` logs for each stage: it ran, DVC's run cache restored its outputs, or it was up to date.
_OUTCOMES = {
    "ran": re.compile(r"^Running stage '([^']+)':", re.MULTILINE),
    RESTORED: re.compile(r"^Stage '([^']+)' is cached - skipping run", re.MULTILINE),
    "up to date": re.compile(r"^Stage '([^']+)' didn't change, skipping", re.MULTILINE),
}


@dataclass(frozen=True)
class Repro:
    outcomes: dict[str, str]  # stage → outcome, in the order DVC visited them

    def changed(self) -> list[str]:
        return [stage for stage, outcome in self.outcomes.items() if outcome != "up to date"]

    def models(self) -> dict[str, str]:
        """Each model whose metrics are new → retrained (its train stage ran), re-evaluated (only its
        evaluate stage ran) or restored (DVC's run cache gave back outputs of an earlier run)."""
        status = {}
        for stage in self.changed():
            kind, _, model = stage.partition("@")
            if kind not in ("train", "evaluate"):
                continue
            if self.outcomes.get(f"train@{model}") == "ran":
                status[model] = "retrained"
            elif self.outcomes.get(f"evaluate@{model}") == "ran":
                status[model] = "re-evaluated"
            else:
                status[model] = "restored"
        return status


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a label for the tables and the params its dvc.lock records."""

    label: str
    params: dict[str, str]  # "path:key" → value, as each stage's `params` in dvc.lock holds them
    has_lock: bool = True


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="git revision to compare with, e.g. origin/main")
    parser.add_argument(
        "--output", type=Path, help="write the report here, its charts into NAME-charts/ beside it (default: stdout)"
    )
    parser.add_argument(
        "--embed-images",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="embed confusion matrices by relative path (off for a PR comment, which cannot show them)",
    )
    parser.add_argument(
        "--image-url-prefix",
        metavar="URL",
        help="link the charts as URL/FILE, where CI publishes them for the PR comment (docs/ci.md)",
    )


def run(args: argparse.Namespace) -> None:
    load_params(args.params)
    ci_report(args.base, layout_of(args), args.output, args.embed_images, args.image_url_prefix)


def ci_report(
    base: str, layout: Layout, output: Path | None, embed_images: bool, image_url_prefix: str | None = None
) -> str:
    """Retrain what changed, compare with `base`, write the report to `output` (else stdout); return it."""
    root = layout.root
    base_commit = git_output(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    if not base_commit:
        raise PipelineError(
            f"--base {base}: no such commit in {root}; fetch it first "
            "(git fetch origin main) or name another branch, tag or commit"
        )
    head = git_output(root, "rev-parse", "--short", "HEAD")
    # Params or code changed and not committed (dvc.lock, which the repro rewrites, does not count).
    changes = " + uncommitted changes" if git_dirty(root) else ""
    workspace = f"HEAD `{head}`{changes}" if head else "no commit"
    repro = run_repro(root)
    images_dir = (output or Path("report.md")).resolve().parent
    models = [stage.partition("@")[2] for stage in repro.outcomes if stage.startswith("train@")]
    charts = report_charts(layout, models, base, base_commit[:7], workspace, output, image_url_prefix, embed_images)
    report = render(repro, base, base_commit[:7], workspace, layout, images_dir if embed_images else None, charts)
    if output:
        write_text(output, report)
    else:
        sys.stdout.write(report)
    return report


def run_repro(root: Path) -> Repro:
    """`dvc repro`, its output streamed to stderr (the CI log) and read for each stage's outcome."""
    process = subprocess.Popen(_dvc("repro"), cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert process.stdout is not None  # stdout=PIPE
    try:
        for line in process.stdout:
            sys.stderr.write(line)
            lines.append(line)
    finally:  # interrupted (Ctrl-C, CI cancelling the job): stop DVC too, which cleans up its stage
        if process.poll() is None:
            process.terminate()
    if process.wait():
        raise PipelineError(
            f"dvc repro failed with exit code {process.returncode} (its output is above); "
            "fix the failing stage and run ci-report again; no report was written"
        )
    log = "".join(lines)
    found = sorted(
        (m.start(), m.group(1), outcome) for outcome, pattern in _OUTCOMES.items() for m in pattern.finditer(log)
    )
    return Repro({stage: outcome for _, stage, outcome in found})


def render(
    repro: Repro,
    base: str,
    base_commit: str,
    workspace: str,
    layout: Layout,
    images_dir: Path | None,
    charts: list[str] | None = None,
) -> str:
    models = repro.models()
    summary = [
        f"**{label}:** {', '.join(m for m, s in models.items() if s == status)}."
        for status, label in (
            ("retrained", "Retrained"),
            ("re-evaluated", "Re-evaluated"),
            ("restored", "Restored from DVC's run cache, not trained again"),
        )
        if status in models.values()
    ]
    if not summary:
        ran = ", ".join(repro.changed())
        summary = [f"**No model retrained** (stages run: {ran})." if ran else f"**{NOTHING_TO_RETRAIN}**"]
    base_name = f"`{base_commit}`" if base_commit.startswith(base) else f"`{base}` (`{base_commit}`)"
    lines = [MARKER, f"## Retrain report: workspace ({workspace}) vs {base_name}", "", " ".join(summary), ""]

    old = lock_side(layout.root, base)
    new = Side("workspace", flat_params(yaml.safe_load((layout.root / "dvc.lock").read_text())))
    lines += [
        f"Parameters and metrics on each side are as its `dvc.lock` records them: the base's as committed "
        f"in {base_name}, the workspace's after this `dvc repro`.",
        "",
    ]
    if not old.has_lock:
        lines += [
            f"> {base_name} has no `dvc.lock`: the pipeline never ran there, so every parameter and metric is new.",
            "",
        ]
    elif stale := stale_params(layout.root, base, old):
        more = f" and {len(stale) - 3} more" if len(stale) > 3 else ""
        lines += [
            f"> {base_name} changed its params without a `dvc repro` ({', '.join(f'`{k}`' for k in stale[:3])}"
            f"{more}): its `dvc.lock` and metrics are still those of the values before, which the base "
            "column shows.",
            "",
        ]

    lines += ["### Stages", "", "| stage | outcome |", "| --- | --- |"]
    lines += [f"| `{stage}` | {outcome} |" for stage, outcome in repro.outcomes.items()]
    lines += ["", "### Parameters changed", "", params_table(old, new) or "No parameter differs from the base.", ""]
    metrics, warning = dvc_diff(layout.root, "metrics", base)
    lines += ["### Metrics vs the base", "", metrics or "No metric differs from the base.", ""]
    if warning:
        lines += [
            f"> DVC could not read the base's metrics ({base}): they are neither in the local DVC cache nor "
            "on a DVC remote. Push them from main (`dvc push`) or restore the cache; see README, "
            '"CI retraining".',
            "",
        ]
    lines += charts or []  # report_charts: the learning curves and per-digit scores against the base
    for model, status in models.items():
        lines += model_section(model, status, layout, images_dir)
    return "\n".join(lines).rstrip() + "\n"


def lock_side(root: Path, rev: str) -> Side:
    text = git_output(root, "show", f"{rev}:./dvc.lock")
    if text is None:
        return Side(rev, {}, has_lock=False)
    return Side(rev, flat_params(yaml.safe_load(text) or {}))


def flat_params(lock: dict) -> dict[str, str]:
    """The params every stage of a dvc.lock recorded, as "path:dotted.key" → value. Stages that
    recorded different values for one key (a partial repro) show them all: "a / b"."""
    values: dict[str, list[str]] = {}
    for stage in (lock.get("stages") or {}).values():
        for path, params in (stage.get("params") or {}).items():
            for key, value in _flatten(params).items():
                seen = values.setdefault(f"{path}:{key}", [])
                if _show(value) not in seen:
                    seen.append(_show(value))
    return {key: " / ".join(seen) for key, seen in values.items()}


def stale_params(root: Path, rev: str, side: Side) -> list[str]:
    """Keys whose value in `rev`'s params files differs from what its dvc.lock recorded."""
    files: dict[str, dict] = {}
    stale = []
    for name, value in side.params.items():
        path, _, key = name.partition(":")
        if path not in files:
            text = git_output(root, "show", f"{rev}:./{path}")
            files[path] = _flatten(yaml.safe_load(text) or {}) if text else {}
        if key in files[path] and _show(files[path][key]) != value:
            stale.append(key)
    return stale


def _flatten(params: dict, prefix: str = "") -> dict:
    """Nested dicts to dotted keys, as DVC shows them; lists stay values."""
    flat: dict[str, object] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def params_table(old: Side, new: Side) -> str:
    """The params that differ, as `dvc params diff --md` lays them out (empty when none)."""
    rows = [
        [*name.split(":", 1), old.params.get(name, "-"), new.params.get(name, "-")]
        for name in dict.fromkeys([*old.params, *new.params])
        if old.params.get(name) != new.params.get(name)
    ]
    return markdown_table(["Path", "Param", old.label, new.label], rows) if rows else ""


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """Padded, so that it reads in a terminal as well as rendered."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines)


def model_section(model: str, status: str, layout: Layout, images_dir: Path | None) -> list[str]:
    reports = layout.eval_reports(model)
    headline = json.loads(reports.metrics.read_text())[model]
    with open(reports.per_class, newline="") as f:
        per_class = list(csv.DictReader(f))
    origin = " (the run that trained it earlier)" if status == "restored" else ""
    lines = [
        f"### {model} ({status})",
        "",
        f"Test accuracy {headline['accuracy']:.4f}, macro F1 {headline['f1']:.4f}. "
        f"MLflow run{origin}: {run_link(layout.model_dir(model), layout.root)}.",
        "",
        "| digit | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['digit']} | {float(r['precision']):.4f} | {float(r['recall']):.4f} | {float(r['f1']):.4f} "
        f"| {r['support']} |"
        for r in per_class
    ]
    for image, what in ((reports.confusion_png, "confusion matrix"), (reports.misclassified, "misclassified digits")):
        if not image.is_file():
            continue
        if images_dir:
            lines += ["", f"![{model} {what}]({os.path.relpath(image, images_dir)})"]
        else:
            lines += ["", f"{what.capitalize()}: `{image.relative_to(layout.root)}`."]
    return [*lines, ""]


def run_link(model_dir: Path, root: Path) -> str:
    """The run's id, linked to the MLflow UI when the store is a tracking server."""
    run_id = read_run_id(model_dir)
    if not run_id:
        return "none recorded"
    from mnist_pipeline.tracking.store import tracking_uri  # MLflow loads in seconds: not for --help

    uri = tracking_uri(root)
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return f"`{run_id}` in the local store (`make ui` to browse it)"
    from mlflow.tracking import MlflowClient

    try:
        experiment_id = MlflowClient(uri).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - the link is a convenience: the id alone still finds the run
        return f"`{run_id}`"
    # Never publish credentials that the URI may carry.
    server = urlunsplit(
        (parts.scheme, (parts.hostname or "") + (f":{parts.port}" if parts.port else ""), parts.path, "", "")
    )
    return f"[`{run_id}`]({server.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"


def dvc_diff(root: Path, kind: str, base: str) -> tuple[str, bool]:
    """`dvc {params,metrics} diff BASE --md`: the Markdown table (empty when nothing differs), and
    whether DVC warned that it could not load the base's files."""
    done = subprocess.run(_dvc(kind, "diff", base, "--md"), cwd=root, capture_output=True, text=True)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(f"dvc {kind} diff {base} failed: {reason}")
    table = done.stdout.strip()
    has_rows = len(table.splitlines()) > 2  # DVC may print the header alone when nothing differs
    return table if has_rows else "", "failed to load" in done.stderr


def _dvc(*args: str) -> list[str]:
    """This environment's DVC, whatever PATH holds."""
    return [sys.executable, "-m", "dvc", *args]
