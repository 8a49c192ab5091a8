"""`ci-report` for real, in a throwaway git repo against each kind of base, its report read the way
a person reads it; the workflow around it passes actionlint."""

import re
from pathlib import Path

import yaml

from tests.support.harness import REPO, sh, venv_bin

WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"


def test_the_workflow_passes_actionlint():
    actionlint, shellcheck = (Path(venv_bin()) / name for name in ("actionlint", "shellcheck"))
    assert actionlint.exists() and shellcheck.exists(), "install the test extra: pip install -e '.[test]'"
    done = sh(REPO, str(actionlint), f"-shellcheck={shellcheck}", "-pyflakes=", str(WORKFLOW), check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflow_pulls_the_run_cache_before_it_retrains_and_pushes_it_on_main():
    """Issue 23: a PR whose params main or a teammate already ran and pushed is restored, not trained
    again: DVC's run cache is pulled before `dvc repro` (with --pull, for the outputs of the runs it
    restores), and main pushes it, with the cache: false files of its runs (push-run-cache)."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["retrain"]["steps"]
    runs = [step.get("run", "") for step in steps]
    pull = next(i for i, run in enumerate(runs) if "dvc pull" in run)
    report = next(i for i, run in enumerate(runs) if "ci-report" in run)
    assert "dvc pull --run-cache" in runs[pull] and pull < report
    assert "set -- --pull" in runs[report] and '"$@"' in runs[report]
    push = next(step for step in steps if "push-run-cache" in step.get("run", ""))
    assert "pull_request" in push["if"] and "refs/heads/main" in push["if"]
    commands = [line for run in runs for line in run.splitlines() if not line.strip().startswith("#")]
    assert not any(re.search(r"\bdvc push\b", line) for line in commands), "dvc push alone leaves the run cache out"
