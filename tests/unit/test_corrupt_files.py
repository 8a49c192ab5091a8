"""A damaged file the pipeline reads (cut short, overwritten, edited) gets one line naming the file
and the command that restores it, never a traceback: the model, a data split, the run file."""

import json
import zipfile

import numpy as np
import pytest

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.layout import RUN_FILE
from mnist_pipeline.data.splits import load_split, save_splits
from tests.support.cli import run_main
from tests.support.harness import REPO, repo_env

RESTORE_MODEL = "restore it with `dvc checkout models/mlp` or retrain it with `dvc repro -f train@mlp`"


def cut_in_half(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_predict_with_a_damaged_model_gets_one_line_and_exit_2(tmp_path):
    (tmp_path / "models/mlp").mkdir(parents=True)
    (tmp_path / "models/mlp/model.keras").write_bytes(b"garbage " * 100)
    np.save(tmp_path / "digit.npy", np.arange(784, dtype=np.uint8).reshape(28, 28) % 200)
    done = run_main(["predict", "digit.npy", "--model", "models/mlp"], tmp_path, repo_env(REPO))
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: models/mlp/model.keras: not a Keras model file (a .keras file is a zip archive; this one is "
        f"damaged or cut short); {RESTORE_MODEL}"
    )


def test_a_zip_that_is_not_a_keras_model_names_what_keras_says(tmp_path):
    from mnist_pipeline.evaluation.keras_file import load_keras

    with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:
        archive.writestr("notes.txt", "not a model")
    with pytest.raises(PipelineError) as error:
        load_keras(tmp_path / "model.keras", "the fix")
    assert str(error.value) == (
        f'{tmp_path / "model.keras"}: Keras cannot load it (KeyError: "There is no item '
        "named 'config.json' in the archive\"); the fix"
    )


def small_splits(folder):
    rng = np.random.default_rng(0)
    splits = {
        name: (rng.integers(0, 256, (5, 28, 28), np.uint8), rng.integers(0, 10, 5, np.uint8))
        for name in ("train", "validation", "test")
    }
    save_splits(splits, folder)
    return splits


def flip_a_byte_in_the_middle(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def without_labels(path):
    with np.load(path) as npz:
        np.savez(path, x=npz["x"])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (cut_in_half, "BadZipFile: File is not a zip file"),
        (flip_a_byte_in_the_middle, "BadZipFile: Bad CRC-32 for file 'x.npy'"),
        (without_labels, "KeyError: 'y is not a file in the archive'"),
    ],
    ids=["cut-short", "a-flipped-byte", "no-labels"],
)
def test_a_damaged_split_names_the_file_and_the_fix(tmp_path, damage, reason):
    processed = tmp_path / "data" / "processed"
    splits = small_splits(processed)
    damage(processed / "train.npz")
    with pytest.raises(PipelineError) as error:
        load_split(processed, "train")
    assert str(error.value) == (
        f"{processed / 'train.npz'}: not a readable split ({reason}); restore it with "
        "`dvc checkout data/processed` or rebuild it with `dvc repro -f preprocess`"
    )
    x, y = load_split(processed, "test")  # the others still read
    assert np.array_equal(x, splits["test"][0]) and np.array_equal(y, splits["test"][1])


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "Expecting property name enclosed in double quotes"),
        (b"\xff\xfe\x00garbage", "'utf-8' codec can't decode byte 0xff"),
        (json.dumps(["r1"]).encode(), "not an object of ids"),
    ],
    ids=["not-json", "not-text", "a-list"],
)
def test_a_damaged_run_file_names_the_file_and_the_fix(tmp_path, content, reason):
    from mnist_pipeline.tracking.run_file import read_model_id, read_run_id

    model_dir = tmp_path / "models" / "mlp"
    model_dir.mkdir(parents=True)
    (model_dir / RUN_FILE).write_bytes(content)
    with pytest.raises(
        PipelineError, match="^" + f"{model_dir / RUN_FILE}: not the run file the train stage writes \\({reason}"
    ):
        read_run_id(model_dir)
    (model_dir / RUN_FILE).write_text(json.dumps({"run_id": "r1", "model_id": "m-1"}))
    assert read_run_id(model_dir) == "r1" and read_model_id(model_dir) == "m-1"
