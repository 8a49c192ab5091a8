"""The entry points: `mnist-pipeline` lists every stage and tool, and `--help` (of the whole or of any
command) imports none of the libraries that take seconds to load, so it answers at once."""

import re
import subprocess
import sys

import pytest

from mnist_pipeline.cli import COMMANDS, TOOLS
from mnist_pipeline.stages import STAGES
from tests.support.harness import REPO

HEAVY = ("tensorflow", "keras", "mlflow", "optuna", "sklearn", "pandas", "matplotlib")


def imported_by(*args: str) -> list[str]:
    """The modules `python -m ARGS` imports (-X importtime), after checking it exits 0."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", *args], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_imports_no_heavy_library(command):
    imported = imported_by("mnist_pipeline", *([command] if command else []), "--help")
    assert "mnist_pipeline.core.command" in imported  # -X importtime saw the imports
    assert [name for name in imported if name.split(".")[0] in HEAVY] == []


def test_the_top_help_imports_no_command_module():
    imported = imported_by("mnist_pipeline", "--help")
    assert [name for name in imported if name.startswith(("mnist_pipeline.tools.", "mnist_pipeline.tuning."))] == []
    assert [name for name in imported if name.startswith("mnist_pipeline.stages.")] == []


def listed(*args: str) -> set[str]:
    """The commands `python -m ARGS --help` lists (argparse indents each by four spaces)."""
    shown = subprocess.run(
        [sys.executable, "-m", *args, "--help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return set(re.findall(r"^ {4}(\S+)", shown, flags=re.MULTILINE))


def test_every_command_is_listed_and_the_stages_entry_lists_the_stages_only():
    assert listed("mnist_pipeline") == set(COMMANDS) == set(STAGES) | set(TOOLS)
    assert listed("mnist_pipeline.stages") == set(STAGES)
