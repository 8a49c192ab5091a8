"""The summarize stage: every model's headline test scores in one metrics file.

`dvc exp show` gives each metrics file its own group of columns and drops columns from the right
to fit the terminal, so with one file per model the second model's accuracy was the first to go.
One file keyed by score then model (accuracy.mlp, accuracy.logistic, log_loss.mlp, …) puts the
models side by side in `dvc exp show`, `dvc metrics show` and `dvc metrics diff`. Only accuracy
and log loss: every column costs width in those screens, and on MNIST's balanced test set the
macro precision, recall and F1 track accuracy; they stay in each model's
reports/eval/<model>/metrics.json and its MLflow run.
"""

import argparse
import json

from mnist_pipeline.core.atomic import write_text
from mnist_pipeline.core.command import layout_of
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import load_params

HEADLINE = ("accuracy", "log_loss")


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> None:
    summarize(list(load_params(args.params).models), layout_of(args))


def summarize(models: list[str], layout: Layout) -> dict[str, dict[str, float]]:
    """Read each model's reports/eval/<model>/metrics.json; write reports/metrics.json; return it."""
    scores = {}
    for model in models:
        path = layout.eval_reports(model).metrics
        if not path.is_file():
            raise PipelineError(f"{path} is missing; run the model's evaluate stage first (dvc repro evaluate@{model})")
        scores[model] = json.loads(path.read_text())[model]
    table = {name: {model: scores[model][name] for model in models if name in scores[model]} for name in HEADLINE}
    write_text(layout.metrics, json.dumps(table, indent=2) + "\n")
    return table
