"""`ci-report` for real, in a throwaway git repo against each kind of base, its report read the way
a person reads it; the workflow around it passes actionlint."""

from pathlib import Path

from tests.support.harness import REPO, sh, venv_bin

WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"


def test_the_workflow_passes_actionlint():
    actionlint, shellcheck = (Path(venv_bin()) / name for name in ("actionlint", "shellcheck"))
    assert actionlint.exists() and shellcheck.exists(), "install the test extra: pip install -e '.[test]'"
    done = sh(REPO, str(actionlint), f"-shellcheck={shellcheck}", "-pyflakes=", str(WORKFLOW), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
