"""What `make setup` leaves in .venv beyond the packages of requirements.lock."""

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.parametrize("package", ["tensorflow", "keras", "mlflow", "dvc"])
def test_the_heavy_packages_are_compiled_to_bytecode(package):
    """uv installs without bytecode unless asked (`--compile-bytecode`, which pip does by default).
    Where Python does not write it (PYTHONDONTWRITEBYTECODE, as on CI machines), every process that
    imports TensorFlow and MLflow then compiles their modules again: 11 s before any work, not 4."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin is not None
    modules = list(Path(spec.origin).parent.rglob("*.py"))
    missing = [str(m) for m in modules if not Path(importlib.util.cache_from_source(str(m))).is_file()]
    assert modules and missing == [], f"{len(missing)} of {len(modules)} modules without bytecode: run make clean setup"
