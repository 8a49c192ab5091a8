"""`ci-report` for real, in a throwaway git repo against each kind of base, its report read the way
a person reads it; the workflow around it passes actionlint."""

import re
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.tools.ci_report import read_base
from tests.support.harness import REPO, sh, venv_bin

WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"


def test_the_workflow_passes_actionlint():
    actionlint, shellcheck = (Path(venv_bin()) / name for name in ("actionlint", "shellcheck"))
    assert actionlint.exists() and shellcheck.exists(), "install the test extra: pip install -e '.[test]'"
    done = sh(REPO, str(actionlint), f"-shellcheck={shellcheck}", "-pyflakes=", str(WORKFLOW), check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the base, read and checked before any work -----------------------------------------------------
GOOD_LOCK = (
    "schema: '2.0'\nstages:\n  check_params:\n    params:\n      params.yaml:\n        data:\n          seed: 1\n"
)
BASE_DAMAGE = [
    ("dvc.lock", "stages: [x\n", "is not valid YAML (line 2: expected ',' or ']', but got '<stream end>')"),
    ("dvc.lock", "- stages\n", "holds a list, not a mapping"),
    ("dvc.lock", "stages: [train, evaluate]\n", "has `stages` that is not a mapping of stage names"),
    ("dvc.lock", "stages:\n  train: python train.py\n", "has stage 'train' that is not a mapping"),
    (
        "dvc.lock",
        "stages:\n  train:\n    params: [params.yaml]\n",
        "has stage 'train' whose `params` is not a mapping of params files to their values",
    ),
    ("params.yaml", "data: {seed: 1\n", "is not valid YAML (line 2: expected ',' or '}', but got '<stream end>')"),
    ("dvc.yaml", "stages:\n\tx: 1\n", "is not valid YAML (line 2: found character '\\t' that cannot start any token)"),
]


def git_repo(root: Path) -> Path:
    """A git repository whose one commit holds a good dvc.lock and the params file it names."""
    root.mkdir()
    (root / "dvc.lock").write_text(GOOD_LOCK)
    (root / "params.yaml").write_text("data:\n  seed: 1\n")
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=CI", "-c", "user.email=ci@example.com", "commit", "-qm", "base"],
    ):
        sh(root, "git", *args)
    return root


@pytest.mark.parametrize(("path", "text", "problem"), BASE_DAMAGE, ids=[f"{p}: {t!r}" for p, t, _ in BASE_DAMAGE])
def test_a_damaged_base_is_one_line_naming_the_base_the_file_the_problem_and_the_fix(tmp_path, path, text, problem):
    """Before: `dvc repro` ran in full, then a yaml ParserError (or AttributeError) traceback and no report."""
    root = git_repo(tmp_path / "repo")
    sh(root, "git", "checkout", "-qb", "damaged")
    (root / path).write_text(text)
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.name=CI", "-c", "user.email=ci@example.com", "commit", "-qm", "damage")
    sh(root, "git", "checkout", "-q", "-")
    with pytest.raises(PipelineError) as caught:
        read_base(root, "damaged")
    assert str(caught.value) == (
        f"--base damaged: its {path} {problem}; nothing was run: repair {path} in a commit on damaged "
        f"(see git show damaged:{path}) or compare with another base"
    )


def test_a_base_that_is_not_a_commit_is_named(tmp_path):
    root = git_repo(tmp_path / "repo")
    with pytest.raises(PipelineError, match=r"^--base HEAD\^\{tree\}: names a tree, not a commit; name a branch, tag"):
        read_base(root, "HEAD^{tree}")
    with pytest.raises(PipelineError, match=r"^--base HEAD:params.yaml: names a blob, not a commit"):
        read_base(root, "HEAD:params.yaml")


def test_a_good_base_gives_its_params_and_the_keys_changed_without_a_repro(tmp_path):
    root = git_repo(tmp_path / "repo")
    assert read_base(root, "HEAD").side.params == {"params.yaml:data.seed": "1"}
    (root / "params.yaml").write_text("data:\n  seed: 2\n")
    sh(root, "git", "-c", "user.name=CI", "-c", "user.email=ci@example.com", "commit", "-qam", "seed 2, no repro")
    assert read_base(root, "HEAD").stale == ["data.seed"]
    (root / "dvc.lock").unlink()
    sh(root, "git", "-c", "user.name=CI", "-c", "user.email=ci@example.com", "commit", "-qam", "no lock")
    assert not read_base(root, "HEAD").side.has_lock  # the pipeline never ran there: a note, not an error


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
