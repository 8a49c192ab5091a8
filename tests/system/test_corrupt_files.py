"""A damaged file the pipeline reads (cut short, overwritten, edited) gets one line naming the file
and the command that restores it, never a traceback: the model, a data split, the run file."""

import shutil

import pytest

from tests.support.cli import run_main
from tests.support.harness import REPO, repo_env, store_uri
from tests.unit.test_corrupt_files import RESTORE_MODEL, cut_in_half


@pytest.fixture
def stage_folder(trained_repo, tmp_path):
    """What the train and evaluate stages of `mlp` read, copied from the trained repository (which
    stays untouched): params.yaml, data/processed, models/mlp. Its runs stay in that repository's store."""
    folder = tmp_path / "repo"
    for part in ("data/processed", "models/mlp"):
        shutil.copytree(trained_repo / part, folder / part)
    shutil.copy(trained_repo / "params.yaml", folder)
    return folder.resolve()


STAGE_CASES = [
    (
        "train",
        "data/processed/train.npz",
        cut_in_half,
        "not a readable split (BadZipFile: File is not a zip file); restore it with `dvc checkout data/processed` "
        "or rebuild it with `dvc repro -f preprocess`",
    ),
    (
        "evaluate",
        "models/mlp/model.keras",
        lambda p: p.write_bytes(b"garbage " * 100),
        "not a Keras model file (a .keras file is a zip archive; this one is damaged or cut short); " + RESTORE_MODEL,
    ),
    (
        "evaluate",
        "models/mlp/mlflow_run.json",
        lambda p: p.write_text("run_id: 123\n"),
        "not the run file the train stage writes (Expecting value: line 1 column 1 (char 0)); restore it with "
        "`dvc checkout models/mlp` or retrain with `dvc repro -f train@mlp`",
    ),
]


@pytest.mark.parametrize(("stage", "damaged", "damage", "expected"), STAGE_CASES, ids=[c[1] for c in STAGE_CASES])
def test_a_damaged_input_stops_the_stage_with_one_line(trained_repo, stage_folder, stage, damaged, damage, expected):
    damage(stage_folder / damaged)
    # In this process (tests/support/cli.py): the test reads only the exit code and what is printed.
    done = run_main([stage, "mlp"], stage_folder, repo_env(REPO, MLFLOW_TRACKING_URI=store_uri(trained_repo)))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: {stage_folder / damaged}: {expected}"
