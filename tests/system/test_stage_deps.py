"""dvc.yaml's promise, read as `dvc status` and `dvc repro --dry` read it in a trained repository: an
edit of any module no stage runs (a tool, tuning, the `mnist-pipeline` entry) makes nothing stale, and an
edit of a stage's own module re-runs that stage and what follows it, nothing before it.
(tests/system/test_pipeline_e2e.py checks that each stage declares exactly the modules it imports.)"""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.harness import code_deps, repo_env, sh, stages_run

MODELS = ("logistic", "mlp")
UP_TO_DATE = "Data and pipelines are up to date."


@contextlib.contextmanager
def commented(repo: Path, paths: list[str]) -> Iterator[None]:
    """A comment appended to each file, then the files put back."""
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
    """Every project module some stage runs, as dvc.lock declares them."""
    locked = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return code_deps(repo, [dep["path"] for stage in locked.values() for dep in stage["deps"]])


def would_run(repo: Path, *flags: str) -> list[str]:
    """The stages `dvc repro --dry` would run (with --force-downstream: and all that follow them)."""
    return stages_run(sh(repo, "dvc", "repro", "--dry", *flags, env=repo_env(repo)).stdout)


@pytest.fixture
def repo(own_trained_repo: Path) -> Path:
    """A trained repository of the test's own, every stage up to date."""
    status = sh(own_trained_repo, "dvc", "status", env=repo_env(own_trained_repo)).stdout
    assert status.strip() == UP_TO_DATE, status
    return own_trained_repo


def test_an_edit_of_any_module_no_stage_runs_leaves_every_stage_up_to_date(repo):
    modules = sorted(str(p.relative_to(repo)) for p in (repo / "src").rglob("*.py"))
    untouched = [m for m in modules if m not in stage_deps(repo)]
    # Every tool, all of tuning and the `mnist-pipeline` entry are among them: if one were a stage's
    # dep, its edit would retrain the models.
    package = "src/mnist_pipeline/"
    for role in ("tools/", "tuning/"):
        assert {m for m in modules if m.startswith(package + role)} <= set(untouched), role
    assert {package + "cli.py", package + "__main__.py"} <= set(untouched)
    with commented(repo, untouched):
        status = sh(repo, "dvc", "status", env=repo_env(repo)).stdout
        assert status.strip() == UP_TO_DATE, status
        assert would_run(repo) == []


TRAIN, EVALUATE = [f"train@{m}" for m in MODELS], [f"evaluate@{m}" for m in MODELS]


@pytest.mark.parametrize(
    ("module", "changed", "follow"),
    [
        ("stages/preprocess.py", ["preprocess"], [*TRAIN, *EVALUATE, "summarize"]),
        ("stages/train.py", TRAIN, [*EVALUATE, "summarize"]),
        ("data/sources.py", ["download"], ["preprocess", *TRAIN, *EVALUATE, "summarize"]),
        # download.yaml's schema: check_params validates the file, the download stage reads it.
        ("data/download_config.py", ["check_params", "download"], ["preprocess", *TRAIN, *EVALUATE, "summarize"]),
        ("tracking/run_file.py", [*TRAIN, *EVALUATE], ["summarize"]),  # a folder dep of both
        ("evaluation/scoring.py", EVALUATE, ["summarize"]),
        ("stages/summarize.py", ["summarize"], []),
    ],
)
def test_an_edit_of_a_stages_module_re_runs_that_stage_and_what_follows_it(repo, module, changed, follow):
    """`dvc repro --dry` names the stages whose own deps changed; what follows them runs once their
    outputs change, which --force-downstream shows without training."""
    with commented(repo, [f"src/mnist_pipeline/{module}"]):
        assert sorted(would_run(repo)) == sorted(changed)
        assert sorted(would_run(repo, "--force-downstream")) == sorted(changed + follow)
    assert would_run(repo) == []


def test_an_edit_of_download_yaml_is_checked_and_downloads_nothing(repo):
    """dvc.yaml's promise: the sources are no dependency of the download stage (any source gives the
    same verified bytes), so an edit re-runs check_params alone, whose output never changes."""
    with commented(repo, ["download.yaml"]):
        assert would_run(repo) == ["check_params"]
