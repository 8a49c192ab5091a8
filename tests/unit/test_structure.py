"""The packages' layers (docs/architecture.md): imports point one way, read from the source itself.

    cli.py ──▶ stages/, tools/, tuning/ ──▶ evaluation/ ──▶ training/ ──▶ tracking/, data/ ──▶ core/

A stage never imports a tool, tuning or another stage, so a stage's deps in dvc.yaml name its own
code and the shared pieces only; the core imports nothing above it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "mnist_pipeline"
# Each package, with the packages it may import (besides itself).
LAYERS = {
    "core": set(),
    "data": {"core"},
    "tracking": {"core"},
    "training": {"core", "data", "tracking"},
    "evaluation": {"core", "data", "tracking", "training"},
    "stages": {"core", "data", "tracking", "training", "evaluation"},
    "tools": {"core", "data", "tracking", "training", "evaluation"},
    "tuning": {"core", "data", "tracking", "training"},
}
MODULES = sorted(path.relative_to(PACKAGE) for path in PACKAGE.rglob("*.py"))


def project_imports(path: Path) -> set[str]:
    """The mnist_pipeline modules the file imports, at the top or inside a function, as dotted names
    below the package (`core.params`; a package's own name for `from mnist_pipeline.core import x`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist_pipeline"):
            base = node.module.removeprefix("mnist_pipeline").lstrip(".")
            found |= {
                f"{base}.{a.name}".lstrip(".")
                if (PACKAGE / base.replace(".", "/") / a.name).with_suffix(".py").exists()
                or (PACKAGE / base.replace(".", "/") / a.name).is_dir()
                else base
                for a in node.names
            }
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("mnist_pipeline.") for a in node.names if a.name.startswith("mnist_pipeline.")
            }
    return {name for name in found if name}


def test_every_module_sits_in_a_package_with_a_layer():
    loose = [str(m) for m in MODULES if len(m.parts) == 1 and m.name not in ("__init__.py", "__main__.py", "cli.py")]
    assert not loose, f"modules outside the role packages: {loose}; move each into the package of its role"
    assert {m.parts[0] for m in MODULES if len(m.parts) > 1} == set(LAYERS)


@pytest.mark.parametrize("module", [m for m in MODULES if len(m.parts) > 1], ids=str)
def test_imports_point_one_way(module):
    package = module.parts[0]
    reached = {name.split(".")[0] for name in project_imports(PACKAGE / module)} - {package}
    assert reached <= LAYERS[package], (
        f"{module} imports {sorted(reached - LAYERS[package])}, above or beside "
        f"{package} (allowed: {sorted(LAYERS[package])})"
    )


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m.parts[0] == "stages" and m.stem != "__init__"), ids=str
)
def test_no_stage_imports_another_stage(module):
    stages = {m.stem for m in MODULES if m.parts[0] == "stages"} - {"__init__", "__main__", module.stem}
    imported = {name.split(".", 1)[1] for name in project_imports(PACKAGE / module) if name.startswith("stages.")}
    assert not imported & stages


def test_the_stages_entry_imports_no_tool():
    """DVC runs `python -m mnist_pipeline.stages`: the table it reads names stage modules only."""
    for module in ("stages/__init__.py", "stages/__main__.py"):
        assert not {name for name in project_imports(PACKAGE / module) if name.split(".")[0] in ("tools", "tuning")}
    from mnist_pipeline.stages import STAGES

    assert all(command.module.startswith("mnist_pipeline.stages.") for command in STAGES.values())
