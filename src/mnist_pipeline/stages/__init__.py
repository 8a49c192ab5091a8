"""The DVC stages, one module each: a thin command over the data, training, evaluation and tracking
packages. dvc.yaml runs them as `python -m mnist_pipeline.stages STAGE`; no stage imports another."""

from pathlib import Path

from mnist_pipeline.core.command import Command
from mnist_pipeline.core.layout import Layout

here = Layout(Path())  # the paths as the help names them, relative to the repository root

STAGES = {
    "check-params": Command("mnist_pipeline.stages.check_params", "validate params.yaml (the first DVC stage)"),
    "download": Command("mnist_pipeline.stages.download", f"fetch and verify the four MNIST IDX files into {here.raw}"),
    "preprocess": Command(
        "mnist_pipeline.stages.preprocess",
        f"split train/validation into {here.processed}; summary in {here.data_reports}",
    ),
    "train": Command("mnist_pipeline.stages.train", "train one model from params.yaml"),
    "evaluate": Command("mnist_pipeline.stages.evaluate", "evaluate one trained model"),
    "summarize": Command("mnist_pipeline.stages.summarize", f"every model's headline test scores into {here.metrics}"),
}
