"""MNIST pipeline: one command per DVC stage, plus compare (a leaderboard of runs), predict and tune (a search).

The `mnist-pipeline` entry point (and `python -m mnist_pipeline`): the stages' table and the tools'.
DVC runs the stages through `python -m mnist_pipeline.stages`, which never reads this file, so an
edit here or in a tool leaves every stage up to date."""

from mnist_pipeline.core.command import Command
from mnist_pipeline.core.command import main as run_command
from mnist_pipeline.stages import STAGES

TOOLS = {
    "compare": Command("mnist_pipeline.tools.compare", "rank the finished runs in the tracking store (a leaderboard)"),
    "predict": Command("mnist_pipeline.tools.predict", "predict the digit in image files or .npy batches"),
    "ui": Command(
        "mnist_pipeline.tools.ui", "the MLflow UI on the tracking store; prints the link to the experiment's runs"
    ),
    "ci-report": Command(
        "mnist_pipeline.tools.ci_report", "dvc repro what changed; Markdown report of it against --base"
    ),
    "push-run-cache": Command(
        "mnist_pipeline.tools.push_run_cache",
        "dvc push --run-cache, with the files of the cached runs it leaves out (other clones restore them)",
    ),
    "mark-dead-runs": Command(
        "mnist_pipeline.tools.mark_dead_runs", "mark KILLED the RUNNING MLflow runs whose process is gone"
    ),
    "tune": Command(
        "mnist_pipeline.tuning.tune",
        "search models.MODEL's params with Optuna (tune.MODEL in tune.yaml); every trial an MLflow run",
    ),
}
COMMANDS = STAGES | TOOLS


def main(argv: list[str] | None = None) -> int:
    return run_command("mnist-pipeline", __doc__.splitlines()[0], COMMANDS, argv)
