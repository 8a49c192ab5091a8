"""dvc.yaml's promise, read as `dvc status` and `dvc repro --dry` read it in a trained repository: an
edit of any module no stage runs (a tool, tuning, the `mnist-pipeline` entry) makes nothing stale, and an
edit of a stage's own module re-runs that stage and what follows it, nothing before it.
(tests/system/test_pipeline_e2e.py checks that each stage declares exactly the modules it imports.)"""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.harness import repo_env, sh, stages_run

MODELS = ("logistic", "mlp")


@contextlib.contextmanager
def commented(repo: Path, paths: list[str]) -> Iterator[None]:
    """A comment appended to each file, then the files put back (the trained repository is shared)."""
    before = {path: (repo / path).read_bytes() for path in paths}
    try:
        for path in paths:
            with open(repo / path, "a") as file:
                file.write("# an edit that changes no behaviour\n")
        yield
    finally:
        for path, content in before.items():
            (repo / path).write_bytes(content)


def stage_deps(repo: Path) -> set[str]:
    locked = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {dep["path"] for stage in locked.values() for dep in stage["deps"]}


def would_run(repo: Path, *flags: str) -> list[str]:
    """The stages `dvc repro --dry` would run (with --force-downstream: and all that follow them)."""
    return stages_run(sh(repo, "dvc", "repro", "--dry", *flags, env=repo_env(repo)).stdout)


def test_an_edit_of_any_module_no_stage_runs_leaves_every_stage_up_to_date(trained_repo):
    modules = sorted(str(p.relative_to(trained_repo)) for p in (trained_repo / "src").rglob("*.py"))
    untouched = [m for m in modules if m not in stage_deps(trained_repo)]
    # Every tool, all of tuning and the `mnist-pipeline` entry are among them: if one were a stage's
    # dep, its edit would retrain the models.
    package = "src/mnist_pipeline/"
    for role in ("tools/", "tuning/"):
        assert {m for m in modules if m.startswith(package + role)} <= set(untouched), role
    assert {package + "cli.py", package + "__main__.py"} <= set(untouched)
    assert sh(trained_repo, "dvc", "status", env=repo_env(trained_repo)).stdout.strip().endswith("up to date.")
    with commented(trained_repo, untouched):
        status = sh(trained_repo, "dvc", "status", env=repo_env(trained_repo)).stdout
        assert status.strip() == "Data and pipelines are up to date.", status
        assert would_run(trained_repo) == []


TRAIN, EVALUATE = [f"train@{m}" for m in MODELS], [f"evaluate@{m}" for m in MODELS]


@pytest.mark.parametrize(
    ("module", "changed", "follow"),
    [
        ("stages/preprocess.py", ["preprocess"], [*TRAIN, *EVALUATE, "summarize"]),
        ("stages/train.py", TRAIN, [*EVALUATE, "summarize"]),
        ("evaluation/scoring.py", EVALUATE, ["summarize"]),
        ("stages/summarize.py", ["summarize"], []),
    ],
)
def test_an_edit_of_a_stages_module_re_runs_that_stage_and_what_follows_it(trained_repo, module, changed, follow):
    """`dvc repro --dry` names the stages whose own deps changed; what follows them runs once their
    outputs change, which --force-downstream shows without training."""
    with commented(trained_repo, [f"src/mnist_pipeline/{module}"]):
        assert sorted(would_run(trained_repo)) == sorted(changed)
        assert sorted(would_run(trained_repo, "--force-downstream")) == sorted(changed + follow)
    assert would_run(trained_repo) == []
