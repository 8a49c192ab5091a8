"""File names of models and reports come from one place, layout.py, and dvc.yaml declares the same."""

from pathlib import Path

import pytest
import yaml

from mnist_pipeline.core.layout import Layout
from tests.support.harness import REPO

HERE = Layout(Path())  # paths relative to the repository root, as dvc.yaml writes them


def written_by_layout(stage: str, model: str | None) -> set[Path]:
    """What Layout says each stage writes (`model`: that of a stage of the foreach over models)."""
    if model is None:
        return {
            "check_params": lambda: {HERE.params_ok},
            "download": lambda: {HERE.raw},
            "preprocess": lambda: {HERE.processed, HERE.data_summary, HERE.class_counts},
            "summarize": lambda: {HERE.metrics},
        }[stage]()
    return {
        "train": lambda: {HERE.model_dir(model), HERE.history(model)},
        "evaluate": lambda: set(HERE.eval_reports(model).all),
    }[stage]()


def declared_outputs(stage: dict, model: str | None) -> set[Path]:
    """Every file or folder a dvc.yaml stage writes: its outs, metrics and plots, `${key}` filled in."""
    entries = [entry for kind in ("outs", "metrics", "plots") for entry in stage.get(kind, [])]
    paths = [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries]
    return {Path(path.replace("${key}", model or "")) for path in paths}


def stages() -> list[tuple[str, str | None, dict]]:
    """(stage, model, definition): one per stage, and per model for the `foreach` over models."""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    models = list(yaml.safe_load((REPO / "params.yaml").read_text())["models"])
    found = []
    for name, stage in pipeline.items():
        if "foreach" in stage:
            assert stage["foreach"] == "${models}", f"{name}: a foreach over something else than the models"
            found += [(name, model, stage["do"]) for model in models]
        else:
            found.append((name, None, stage))
    return found


@pytest.mark.parametrize(
    ("stage", "model", "definition"), [pytest.param(*s, id=f"{s[0]}@{s[1]}" if s[1] else s[0]) for s in stages()]
)
def test_each_stage_writes_what_layout_names(stage, model, definition):
    assert declared_outputs(definition, model) == written_by_layout(stage, model)


def test_every_stage_of_dvc_yaml_has_its_layout():
    assert {stage for stage, _, _ in stages()} == {
        "check_params",
        "download",
        "preprocess",
        "train",
        "evaluate",
        "summarize",
    }
