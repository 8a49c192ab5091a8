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
from mnist_pipeline.core.params import Params, load_params
from mnist_pipeline.evaluation.gates import Failure, Scores, judge, summary
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
            elif self.outcomes.get(f"train@{model}") == RESTORED:  # its evaluation, never run-cached, may run
                status[model] = "restored"
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
        "--fail-on-regression",
        action="store_true",
        help="exit 3, after writing the report, when a model fails a regression gate of `registry` against the base",
    )
    parser.add_argument(
        "--embed-images",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="embed confusion matrices by relative path (off for a PR comment, which cannot show them)",
    )
    parser.add_argument(
        "--pull",
        action="store_true",
        help="dvc repro --pull: restore from the DVC remote's run cache what a teammate or main already trained",
    )
    parser.add_argument(
        "--image-url-prefix",
        metavar="URL",
        help="link the charts as URL/FILE, where CI publishes them for the PR comment (docs/ci.md)",
    )


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    ci_report(
        args.base,
        layout_of(args),
        args.output,
        args.embed_images,
        params,
        args.fail_on_regression,
        pull=args.pull,
        image_url_prefix=args.image_url_prefix,
    )


def ci_report(
    base: str,
    layout: Layout,
    output: Path | None,
    embed_images: bool,
    params: Params | None = None,
    fail_on_regression: bool = False,
    pull: bool = False,
    image_url_prefix: str | None = None,
) -> str:
    """Retrain what changed, compare with `base`, write the report to `output` (else stdout); return it.
    With `params`, each model whose test scores changed is judged against the base's by the gates of
    its `registry` section; `fail_on_regression`: a failed regression gate then raises GateFailed,
    once the report is written. `pull`: `dvc repro --pull`, for runs restored from a remote's run cache.
    `image_url_prefix`: where CI publishes the charts, which the report then links as URL/FILE."""
    root = layout.root
    # All the report reads of the base, read and checked first: a damaged base found after
    # `dvc repro` would cost the whole training and end in no report.
    old = read_base(root, base)
    head = git_output(root, "rev-parse", "--short", "HEAD")
    # Params or code changed and not committed (dvc.lock and reports/, which the repro rewrites, do not count).
    changes = " + uncommitted changes" if git_dirty(root) else ""
    workspace = f"HEAD `{head}`{changes}" if head else "no commit"
    repro = run_repro(root, pull)
    images_dir = (output or Path("report.md")).resolve().parent
    verdicts = judge_models(layout, base, params) if params else None
    models = [stage.partition("@")[2] for stage in repro.outcomes if stage.startswith("train@")]
    charts = report_charts(layout, models, base, old.commit[:7], workspace, output, image_url_prefix, embed_images)
    report = render(repro, old, workspace, layout, images_dir if embed_images else None, verdicts, charts)
    if output:
        write_text(output, report)
    else:
        sys.stdout.write(report)
    if fail_on_regression and (failed := [v for v in verdicts or [] if v.regressions]):
        fails = "; ".join(
            f"{v.model} fails the registry's gates against {base}: {summary(v.regressions)}" for v in failed
        )
        raise GateFailed(f"{fails}; the report is {f'in {output}' if output else 'above'}")
    return report


def run_repro(root: Path, pull: bool = False) -> Repro:
    """`dvc repro`, its output streamed to stderr (the CI log) and read for each stage's outcome.
    `pull`: DVC pulls the remote's run cache, and the outputs of a run it restores (push-run-cache)."""
    process = subprocess.Popen(
        _dvc("repro", *(["--pull"] if pull else [])),
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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
    old: "Base",
    workspace: str,
    layout: Layout,
    images_dir: Path | None,
    verdicts: list["Verdict"] | None = None,
    charts: list[str] | None = None,
) -> str:
    base, base_commit = old.rev, old.commit[:7]
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
    if verdicts is not None:
        lines += [*gate_lines(verdicts, base_name), ""]

    new = Side("workspace", flat_params(yaml.safe_load((layout.root / "dvc.lock").read_text())))
    lines += [
        f"Parameters and metrics on each side are as its `dvc.lock` records them: the base's as committed "
        f"in {base_name}, the workspace's after this `dvc repro`.",
        "",
    ]
    if not old.side.has_lock:
        lines += [
            f"> {base_name} has no `dvc.lock`: the pipeline never ran there, so every parameter and metric is new.",
            "",
        ]
    elif stale := old.stale:
        more = f" and {len(stale) - 3} more" if len(stale) > 3 else ""
        lines += [
            f"> {base_name} changed its params without a `dvc repro` ({', '.join(f'`{k}`' for k in stale[:3])}"
            f"{more}): its `dvc.lock` and metrics are still those of the values before, which the base "
            "column shows.",
            "",
        ]

    lines += ["### Stages", "", "| stage | outcome |", "| --- | --- |"]
    lines += [f"| `{stage}` | {outcome} |" for stage, outcome in repro.outcomes.items()]
    lines += [
        "",
        "### Parameters changed",
        "",
        params_table(old.side, new) or "No parameter differs from the base.",
        "",
    ]
    metrics, warning = dvc_diff(layout.root, "metrics", base)
    lines += ["### Metrics vs the base", "", metrics or "No metric differs from the base.", ""]
    if warning:
        lines += [
            f"> DVC could not read the base's metrics ({base}): they are neither in the local DVC cache nor "
            "on a DVC remote. Push them from main (`dvc push`) or restore the cache; see README, "
            '"CI retraining".',
            "",
        ]
    lines += cost_section(layout.root, base, list(models))
    lines += charts or []  # report_charts: the learning curves and per-digit scores against the base
    for model, status in models.items():
        lines += model_section(model, status, layout, images_dir)
    return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class Base:
    """What the report reads of the base revision: its commit, its dvc.lock's params, and the keys
    whose value in its params files differs from what that dvc.lock recorded."""

    rev: str
    commit: str
    side: Side
    stale: list[str]


def read_base(root: Path, rev: str) -> Base:
    """The base, read and checked before any work: a commit, whose dvc.yaml, dvc.lock (if any) and
    the params files that dvc.lock names are YAML of the shape DVC writes. Anything else is one line
    naming the base, the file, the problem and the fix. (A base without dvc.lock is no damage: the
    report says the pipeline never ran there.)"""
    commit = git_output(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    kind = None if commit else git_output(root, "cat-file", "-t", rev)
    if kind:
        raise PipelineError(f"--base {rev}: names a {kind}, not a commit; name a branch, tag or commit")
    if not commit:
        raise PipelineError(
            f"--base {rev}: no such commit in {root}; fetch it first "
            "(git fetch origin main) or name another branch, tag or commit"
        )
    base_yaml(root, rev, "dvc.yaml")  # DVC reads the base's metrics through it
    lock = base_yaml(root, rev, "dvc.lock")
    if lock is None:
        return Base(rev, commit, Side(rev, {}, has_lock=False), [])
    if problem := lock_problem(lock):
        raise base_error(rev, "dvc.lock", problem)
    side = Side(rev, flat_params(lock))
    files = {
        path: _flatten(base_yaml(root, rev, path) or {}) for path in dict.fromkeys(k.split(":")[0] for k in side.params)
    }
    return Base(rev, commit, side, stale_params(files, side))


def base_yaml(root: Path, rev: str, path: str) -> dict | None:
    """The YAML mapping `path` holds at `rev` (empty for an empty file); None where there is no such file."""
    # Not git_output, which strips the text: the line numbers in YAML's errors must be the file's.
    shown = subprocess.run(["git", "show", f"{rev}:./{path}"], cwd=root, capture_output=True, text=True)
    if shown.returncode:
        return None
    try:
        data = yaml.safe_load(shown.stdout)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}: {getattr(exc, 'problem', None)})" if mark else ""
        raise base_error(rev, path, f"is not valid YAML{where}") from None
    if data is not None and not isinstance(data, dict):
        raise base_error(rev, path, f"holds a {type(data).__name__}, not a mapping")
    return data or {}


def lock_problem(lock: dict) -> str | None:
    """Where a dvc.lock is not the shape DVC writes (stages, each with params by file), or None."""
    stages = lock.get("stages") or {}
    if not isinstance(stages, dict):
        return "has `stages` that is not a mapping of stage names"
    for name, stage in stages.items():
        if not isinstance(stage, dict):
            return f"has stage {name!r} that is not a mapping"
        params = stage.get("params") or {}
        if not isinstance(params, dict) or not all(isinstance(values, dict) for values in params.values()):
            return f"has stage {name!r} whose `params` is not a mapping of params files to their values"
    return None


def base_error(rev: str, path: str, problem: str) -> PipelineError:
    return PipelineError(
        f"--base {rev}: its {path} {problem}; nothing was run: repair {path} in a commit on {rev} "
        f"(see git show {rev}:{path}) or compare with another base"
    )


class GateFailed(PipelineError):
    """--fail-on-regression: a model fails a regression gate (the report is written)."""

    exit_code = 3


@dataclass(frozen=True)
class Verdict:
    """One model's scores in the workspace against the base's, and the gates they fail."""

    model: str
    failures: list[Failure]
    base: Scores | None  # None: the base has no scores of this model
    workspace: Scores

    @property
    def regressions(self) -> list[Failure]:
        return [failure for failure in self.failures if failure.regression]


def judge_models(layout: Layout, base: str, params: Params) -> list[Verdict]:
    """Each model whose test scores in the workspace differ from the base's, judged against them by
    the registry's gates (evaluation/gates.py). Both sides from reports/eval/<model>/, which git
    holds (`cache: false`): the base's as committed, the workspace's after the repro."""
    verdicts = []
    for model in params.models:
        reports = layout.eval_reports(model)
        if not (reports.metrics.is_file() and reports.per_class.is_file()):
            continue
        files = [reports.metrics, reports.per_class]
        ours = [path.read_text() for path in files]
        theirs = [
            git_output(layout.root, "show", f"{base}:./{path.relative_to(layout.root).as_posix()}") for path in files
        ]
        if [text and text.strip() for text in theirs] == [text.strip() for text in ours]:
            continue  # unchanged: nothing to judge
        workspace = _scores(model, *ours)
        try:
            old = _scores(model, theirs[0], theirs[1]) if theirs[0] and theirs[1] else None
        except (ValueError, KeyError, TypeError):  # the base's files predate these reports: nothing to compare
            old = None
        verdicts.append(Verdict(model, judge(workspace, old, params.registry), old, workspace))
    return verdicts


def _scores(model: str, metrics: str, per_class: str) -> Scores:
    return Scores.from_rows(json.loads(metrics)[model]["accuracy"], csv.DictReader(per_class.splitlines()))


def gate_lines(verdicts: list[Verdict], base_name: str) -> list[str]:
    """The report's verdict on each changed model: the gate it fails and on which digit, or that it passes."""
    if not verdicts:
        return [f"**Registry gates:** no model's test scores differ from {base_name}."]
    lines = [f"**Registry gates** (`registry` in params.yaml), each changed model against {base_name}:", ""]
    for v in verdicts:
        accuracy = f"test accuracy {v.base.accuracy:.4f} → " if v.base else "test accuracy "
        if v.regressions:
            lines.append(f"- **{v.model} fails:** {summary(v.regressions)}.")
        elif v.failures:
            lines.append(f"- {v.model} passes, but would not replace the base's model: {summary(v.failures)}.")
        else:
            new = "" if v.base else " (the base has no scores of it)"
            lines.append(f"- {v.model} passes: {accuracy}{v.workspace.accuracy:.4f}{new}.")
    return lines


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


def stale_params(files: dict[str, dict], side: Side) -> list[str]:
    """Keys whose value in the side's params files (flattened, by path) differs from what its dvc.lock recorded."""
    stale = []
    for name, value in side.params.items():
        path, _, key = name.partition(":")
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


def cost_section(root: Path, base: str, models: list[str]) -> list[str]:
    """What training each model cost, the base's → the workspace's: fit time, CPU time and peak
    memory from models/<model>/train_cost.json. The base's through DVC (the folder is DVC's, not
    git's): from the local cache or the DVC remote, else "-"."""
    from mnist_pipeline.training.cost import COST_FILE, KEYS, read_cost

    rows = []
    for model in models:
        path = f"models/{model}/{COST_FILE}"
        new = read_cost((root / path).read_text()) if (root / path).is_file() else {}
        try:
            import dvc.api

            old = read_cost(dvc.api.read(path, repo=str(root), rev=base))
        except Exception:  # noqa: BLE001 - trained before costs were recorded, or not in any cache: no base value
            old = {}
        rows.append([model, *(f"{_cost(old.get(key))} → {_cost(new.get(key))}" for key in KEYS)])
    if not rows:
        return []
    table = markdown_table(["model", "fit time (s)", "CPU time (s)", "peak memory (MB)"], rows)
    return ["### Training cost vs the base", "", table, ""]


def _cost(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


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
    if elsewhere := trained_elsewhere(run_id, uri):
        return elsewhere
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


def trained_elsewhere(run_id: str, uri: str) -> str | None:
    """None when the store holds the run; else what a reader should know: a model restored from a
    run cache that another clone pushed was trained against that clone's store, and its evaluation
    here (DVC never run-caches it) went into a run of its own, tagged with the training run's id."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        client.get_run(run_id)
        return None
    except MlflowException:
        pass
    except Exception:  # noqa: BLE001 - a store that does not answer: run_link's own fallback says what it can
        return None
    experiments = [e.experiment_id for e in client.search_experiments()]
    here = client.search_runs(experiments, f"tags.training_run_id = '{run_id}'", max_results=1) if experiments else []
    evaluated = f"; evaluated here in run `{here[0].info.run_id}`" if here else ""
    return f"`{run_id}`, trained against another tracking store (not in this one){evaluated}"


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
