"""The ci-report command: `dvc repro` what changed, then write a Markdown report of what ran and
what it did to the parameters and metrics against a base revision. CI posts the file as a job
summary and a PR comment; anyone can run the same command locally."""

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mnist_pipeline import tracking
from mnist_pipeline.atomic import write_text
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.layout import Layout

# Hidden in rendered Markdown; CI finds its own PR comment by it and edits it in place.
MARKER = "<!-- mnist-pipeline:ci-report -->"
NOTHING_TO_RETRAIN = "Nothing to retrain: every stage is up to date."
# What `dvc repro` logs for each stage: it ran, DVC's run cache restored its outputs, or it was up to date.
_OUTCOMES = {
    "ran": re.compile(r"^Running stage '([^']+)':", re.M),
    "restored from DVC's run cache": re.compile(r"^Stage '([^']+)' is cached - skipping run", re.M),
    "up to date": re.compile(r"^Stage '([^']+)' didn't change, skipping", re.M),
}


@dataclass(frozen=True)
class Repro:
    outcomes: dict[str, str]  # stage → outcome, in the order DVC visited them

    def changed(self) -> list[str]:
        return [stage for stage, outcome in self.outcomes.items() if outcome != "up to date"]

    def models(self) -> list[str]:
        """Models whose train or evaluate stage ran or was restored: their metrics are new."""
        stages = [s.split("@", 1) for s in self.changed() if s.startswith(("train@", "evaluate@"))]
        return list(dict.fromkeys(model for _, model in stages))


def ci_report(base: str, layout: Layout, output: Path | None, embed_images: bool) -> str:
    """Retrain what changed, compare with `base`, write the report to `output` (else stdout); return it."""
    root = layout.root
    base_commit = tracking.git_output(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    if not base_commit:
        raise PipelineError(f"--base {base}: no such commit in {root}; fetch it first "
                            "(git fetch origin main) or name another branch, tag or commit")
    repro = run_repro(root)
    head = tracking.git_output(root, "rev-parse", "--short", "HEAD") or "no commit"
    images_dir = (output or Path("report.md")).resolve().parent
    report = render(repro, base, base_commit[:7], head, layout, images_dir if embed_images else None)
    if output:
        write_text(output, report)
    else:
        sys.stdout.write(report)
    return report


def run_repro(root: Path) -> Repro:
    """`dvc repro`, its output streamed to stderr (the CI log) and read for each stage's outcome."""
    process = subprocess.Popen(_dvc("repro"), cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in process.stdout:
            sys.stderr.write(line)
            lines.append(line)
    finally:  # interrupted (Ctrl-C, CI cancelling the job): stop DVC too, which cleans up its stage
        if process.poll() is None:
            process.terminate()
    if process.wait():
        raise PipelineError(f"dvc repro failed with exit code {process.returncode} (its output is above); "
                            "fix the failing stage and run ci-report again; no report was written")
    log = "".join(lines)
    found = sorted((m.start(), m.group(1), outcome) for outcome, pattern in _OUTCOMES.items()
                   for m in pattern.finditer(log))
    return Repro({stage: outcome for _, stage, outcome in found})


def render(repro: Repro, base: str, base_commit: str, head: str, layout: Layout, images_dir: Path | None) -> str:
    changed = ", ".join(s if repro.outcomes[s] == "ran" else f"{s} from the run cache" for s in repro.changed())
    if repro.models():
        summary = f"**Retrained:** {', '.join(repro.models())} (stages run: {changed})."
    elif changed:
        summary = f"**No model retrained** (stages run: {changed})."
    else:
        summary = f"**{NOTHING_TO_RETRAIN}**"
    base_name = base_commit if base_commit.startswith(base) else f"{base}` (`{base_commit}"
    lines = [MARKER, f"## Retrain report: workspace (HEAD `{head}`) vs `{base_name}`", "", summary, ""]
    lines += ["### Stages", "", "| stage | outcome |", "| --- | --- |"]
    lines += [f"| `{stage}` | {outcome} |" for stage, outcome in repro.outcomes.items()]
    params, _ = dvc_diff(layout.root, "params", base)
    metrics, warning = dvc_diff(layout.root, "metrics", base)
    lines += ["", "### Parameters changed", "", params or "No parameter differs from the base.", ""]
    headline, per_class = split_rows(metrics, "per_class")
    lines += ["### Metrics vs the base", "", headline or "No metric differs from the base.", ""]
    if per_class:
        lines += ["<details><summary>Per-class changes</summary>", "", per_class, "", "</details>", ""]
    if warning:
        lines += [f"> DVC could not read the base's metrics ({base}): they are neither in the local DVC cache nor "
                  "on a DVC remote. Push them from main (`dvc push`) or restore the cache; see README, "
                  "\"CI retraining\".", ""]
    for model in repro.models():
        lines += model_section(model, layout, images_dir)
    return "\n".join(lines).rstrip() + "\n"


def split_rows(table: str, word: str) -> tuple[str, str]:
    """A Markdown table split in two by whether a row holds `word`; each keeps the header (empty if no rows)."""
    header, rows = table.splitlines()[:2], table.splitlines()[2:]
    parts = [[row for row in rows if (word in row) == match] for match in (False, True)]
    return tuple("\n".join(header + part) if part else "" for part in parts)


def model_section(model: str, layout: Layout, images_dir: Path | None) -> list[str]:
    eval_dir = layout.eval_dir(model)
    test = json.loads((eval_dir / "metrics.json").read_text())["test"]
    lines = [f"### {model}", "",
             f"Test accuracy {test['accuracy']:.4f}, macro F1 {test['macro']['f1']:.4f}. "
             f"MLflow run: {run_link(layout.model_dir(model), layout.root)}.", "",
             "| digit | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {digit} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |"
              for digit, s in test["per_class"].items()]
    image = eval_dir / "confusion_matrix.png"
    if images_dir:
        lines += ["", f"![{model} confusion matrix]({os.path.relpath(image, images_dir)})"]
    else:
        lines += ["", f"Confusion matrix: `{image.relative_to(layout.root)}`."]
    return lines + [""]


def run_link(model_dir: Path, root: Path) -> str:
    """The run's id, linked to the MLflow UI when the store is a tracking server."""
    run_id = tracking.read_run_id(model_dir)
    if not run_id:
        return "none recorded"
    uri = tracking.tracking_uri(root)
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return f"`{run_id}` in the local store (`make ui` to browse it)"
    from mlflow.tracking import MlflowClient

    try:
        experiment_id = MlflowClient(uri).get_run(run_id).info.experiment_id
    except Exception:  # the link is a convenience: the id alone still finds the run
        return f"`{run_id}`"
    # Never publish credentials that the URI may carry.
    server = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))
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

