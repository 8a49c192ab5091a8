"""Dependencies point one way: cli → stages → shared pieces. No stage module imports another, so a
stage's deps in dvc.yaml name its own code and the shared pieces only."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mnist_pipeline"
STAGES = {"download", "preprocess", "train", "evaluate", "summary", "tune"}


def project_imports(module: str) -> set[str]:
    """The mnist_pipeline modules `module` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist_pipeline"):
            found |= {node.module.partition(".")[2]} if "." in node.module else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.partition(".")[2] for a in node.names if a.name.startswith("mnist_pipeline.")}
    return found


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_module_imports_another(stage):
    assert not project_imports(stage) & (STAGES - {stage})
