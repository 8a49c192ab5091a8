"""The linter, the formatter and the type checker, as `make lint` and .pre-commit-config.yaml run them
(configured in pyproject.toml): in the fast tier, so a finding fails `make test-fast` and CI."""

import os
import subprocess
import sys

import pytest

from tests.support.harness import REPO


@pytest.mark.parametrize(
    "check",
    [["ruff", "check", "--no-cache", "."], ["ruff", "format", "--check", "--no-cache", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_the_code_is_clean(check):
    env = {key: value for key, value in os.environ.items() if key != "MYPYPATH"}  # pyproject.toml's paths only
    done = subprocess.run([sys.executable, "-m", *check], cwd=REPO, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
