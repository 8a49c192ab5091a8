"""The leaderboard: finished runs from the tracking store, ranked by a metric, as text, Markdown or CSV."""

import mlflow
import pandas as pd

from mnist_pipeline.errors import PipelineError

# The params that tell runs apart; a column is shown when any run has it.
KEY_PARAMS = ["hidden_units", "dropout", "optimizer", "learning_rate", "lr_schedule", "epochs", "batch_size", "l2"]
KEY_METRICS = ["test_accuracy", "test_macro_precision", "test_macro_recall"]


def leaderboard(experiment: str, model: str | None = None, sort_by: str = "test_accuracy",
                ascending: bool | None = None, limit: int | None = None) -> pd.DataFrame:
    """One row per finished run, best first; `ascending` defaults to True for losses only."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        raise PipelineError(f"no experiment {experiment!r} in {mlflow.get_tracking_uri()}; "
                            "run the pipeline first, or name another with --experiment")
    query = "attributes.status = 'FINISHED'" + (f" and tags.model = '{model}'" if model else "")
    runs = mlflow.search_runs([found.experiment_id], filter_string=query, output_format="pandas")
    if runs.empty:
        return pd.DataFrame(columns=["rank", "model", *KEY_METRICS, "run_id"])
    if f"metrics.{sort_by}" not in runs:
        known = sorted(c.removeprefix("metrics.") for c in runs if c.startswith("metrics."))
        raise PipelineError(f"no metric {sort_by!r} in these runs; sort by one of: {', '.join(known)}")
    if ascending is None:
        ascending = "loss" in sort_by
    runs = runs.sort_values(f"metrics.{sort_by}", ascending=ascending, na_position="last", kind="stable")
    table = pd.DataFrame({"model": runs.get("tags.model"), "dvc_exp": runs.get("tags.dvc.exp_name")})
    for name in KEY_PARAMS:
        if f"params.{name}" in runs and runs[f"params.{name}"].notna().any():
            table[name] = runs[f"params.{name}"]
    for name in dict.fromkeys([*KEY_METRICS, sort_by]):  # the sort metric too, once
        table[name] = runs.get(f"metrics.{name}")
    table["run_id"] = runs["run_id"]
    table.insert(0, "rank", range(1, len(table) + 1))
    table = table.dropna(axis="columns", how="all")
    return table.head(limit) if limit else table


def render(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "markdown":
        return table.to_markdown(index=False, floatfmt=".4f", missingval="") + "\n"
    return table.to_string(index=False, float_format=lambda x: f"{x:.4f}", na_rep="") + "\n"
