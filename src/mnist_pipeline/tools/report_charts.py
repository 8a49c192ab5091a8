"""ci-report's charts: each model's learning curves and per-digit scores, the workspace against the
base, drawn as PNG files from the very Vega-Lite specs `dvc plots diff` fills in (the templates in
.dvc/plots), with vl-convert: no Node, no browser. A PR comment shows them once CI has published
them at a URL GitHub can fetch (docs/ci.md, "Charts in the PR comment")."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.core.atomic import atomic_dir
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.layout import Layout

# Big enough to read in a PR comment, which shows an image at most about 880 pixels wide.
SCALE = 2


@dataclass(frozen=True)
class Chart:
    alt: str  # what it shows, for the Markdown's alt text
    path: Path


def report_charts(
    layout: Layout,
    models: list[str],
    base: str,
    base_commit: str,
    workspace: str,
    output: Path | None,
    url_prefix: str | None,
    embed: bool,
) -> list[str]:
    """Draw the charts beside the report (`output`'s folder, `<name>-charts/`) and return the report's
    lines that show them. A report to stdout has nowhere to keep files: it has no charts."""
    if output is None:
        return []
    base_name = base_commit if base_commit.startswith(base) else f"{base} ({base_commit})"
    sides = f"base {base_name} vs workspace ({workspace})".replace("`", "")
    folder = output.resolve().parent / f"{output.stem}-charts"
    charts = draw_charts(layout, models, base, sides, folder)
    return chart_lines(charts, output.resolve().parent, url_prefix, embed, layout.root.resolve())


def plots_of(layout: Layout, model: str) -> dict[str, str]:
    """The model's plots in dvc.yaml (plot id → the chart's file name), in the report's order."""
    root = layout.root
    return {
        layout.history(model).relative_to(root).as_posix(): f"{model}-learning-curves.png",
        layout.eval_reports(model).per_class.relative_to(root).as_posix(): f"{model}-per-digit.png",
    }


def draw_charts(layout: Layout, models: list[str], base: str, sides: str, folder: Path) -> list[Chart]:
    """Draw the charts of `models` whose data differ from the base's, with `dvc plots diff base`, into
    `folder` (replaced whole, so no chart of an earlier report stays beside them). Whether this run
    retrained a model does not matter: a PR whose author ran `dvc repro` retrains nothing in CI, yet
    its curves differ from the base's. `sides` names the two revisions for the subtitles."""
    plots = {plot: name for model in models for plot, name in plots_of(layout, model).items()}
    specs = plots_diff(layout.root, base, list(plots)) if plots else {}
    import vl_convert  # a second to load: only when there is something to draw

    charts = []
    with atomic_dir(folder) as tmp:
        for plot, name in plots.items():
            spec = specs.get(plot)
            if spec is None or not differs(spec["data"]["values"]):  # not in dvc.yaml, or as on the base
                continue
            label(spec, base, sides)
            try:
                png = vl_convert.vegalite_to_png(spec, scale=SCALE)
            except ValueError as e:  # "Vega-Lite to PNG conversion failed:", then the error, then JS frames
                reason = " ".join(str(e).split("\n")[:2]).strip() or type(e).__name__
                raise PipelineError(
                    f"cannot draw the chart of {plot} ({reason}); fix its template in .dvc/plots; no report was written"
                ) from None
            (tmp / name).write_bytes(png)
            charts.append(Chart(spec["title"]["text"], folder / name))
    return charts


def plots_diff(root: Path, base: str, targets: list[str]) -> dict[str, dict]:
    """`dvc plots diff BASE --json`: plot id → its Vega-Lite spec, filled with both sides' data."""
    # This environment's DVC, whatever PATH holds (as ci_report runs it).
    command = [sys.executable, "-m", "dvc", "plots", "diff", base, "--json", "--targets", *targets]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(f"dvc plots diff {base} failed: {reason}")
    shown = json.loads(done.stdout).get("data", {})
    return {plot: entries[0]["content"] for plot, entries in shown.items() if entries[0].get("type") == "vega"}


def differs(rows: list[dict]) -> bool:
    """Whether the plot's rows differ between its revisions (one revision alone differs)."""
    sides: dict[str, list[dict]] = {}
    for row in rows:
        sides.setdefault(row["rev"], []).append({k: v for k, v in row.items() if k != "rev"})
    return len(sides) != 2 or len({json.dumps(side, sort_keys=True) for side in sides.values()}) == 2


def label(spec: dict, base: str, sides: str) -> None:
    """Say which revisions the chart compares: in its subtitle, and in the legend, where the base is
    "base (main)" (sorted before "workspace", so it keeps the first line style and shape)."""
    spec["title"]["subtitle"] = sides
    for row in spec["data"]["values"]:
        if row.get("rev") == base:
            row["rev"] = f"base ({base})"


def chart_lines(charts: list[Chart], report_dir: Path, url_prefix: str | None, embed: bool, root: Path) -> list[str]:
    """The report's charts section: images by URL (published by CI), by path relative to the report
    (read locally), or the files' paths (a PR comment that cannot show them)."""
    if not charts:
        return []
    lines = ["### Charts: the workspace against the base", ""]
    for chart in charts:
        if url_prefix:
            lines += [f"![{chart.alt}]({url_prefix.rstrip('/')}/{chart.path.name})", ""]
        elif embed:
            lines += [f"![{chart.alt}]({Path(os.path.relpath(chart.path, report_dir)).as_posix()})", ""]
        else:
            shown = chart.path.relative_to(root) if chart.path.is_relative_to(root) else chart.path
            lines += [f"{chart.alt}: `{shown.as_posix()}`.", ""]
    return lines
