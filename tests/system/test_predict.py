"""`predict`: images of any size and mode, .npy batches, models from a path, a run or the registry."""

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from mnist_pipeline.core.layout import MODEL_FILE, Layout
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.tools.predict import to_mnist
from tests.support.harness import repo_env, sh, store_uri
from tests.unit.test_inputs import png_of_zeros


@pytest.fixture(scope="module")
def test_images(trained_repo):
    return load_split(Layout(trained_repo).processed, "test")


def as_photo(digit: np.ndarray, size: int) -> Image.Image:
    """An MNIST digit as a user would photograph it: large, dark ink on light paper, in RGB."""
    paper = 255 - digit
    return Image.fromarray(paper).resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_a_large_light_background_image_becomes_the_mnist_digit(test_images):
    x, _ = test_images
    for digit in x[:20]:
        recovered = to_mnist(as_photo(digit, 280), Path("photo"))
        assert recovered.shape == (28, 28) and recovered.dtype == np.uint8
        assert correlation(recovered, digit) > 0.85
        # Inverting or not centring it would break the likeness.
        assert correlation(255 - recovered, digit) < 0 and correlation(np.roll(recovered, 6, axis=1), digit) < 0.6


def test_transparent_png_reads_as_ink_on_paper(test_images):
    digit = test_images[0][0]
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = digit  # black ink whose opacity is the stroke, on a transparent background
    recovered = to_mnist(Image.fromarray(rgba, "RGBA"), Path("ink"))
    assert correlation(recovered, digit) > 0.85


def predict_cli(repo, *args, check=True):
    return sh(
        repo,
        "python",
        "-m",
        "mnist_pipeline",
        "predict",
        *map(str, args),
        check=check,
        env=repo_env(repo, MLFLOW_TRACKING_URI=store_uri(repo)),
    )


def parse(output: str) -> list[tuple[str, int, float]]:
    rows = [line.split() for line in output.strip().splitlines()[1:]]
    return [(name, int(digit), float(probability)) for name, digit, probability in rows]


def test_predictions_from_npy_files_images_and_the_registry_agree(trained_repo, test_images, tmp_path):
    import keras

    x, _ = test_images
    batch = tmp_path / "batch.npy"
    np.save(batch, x[:8])
    expected = keras.models.load_model(Layout(trained_repo).model_dir("mlp") / MODEL_FILE).predict(x[:8], verbose=0)

    rows = parse(predict_cli(trained_repo, batch, "--model", "models/mlp").stdout)
    assert [name for name, _, _ in rows] == [f"{batch}[{i}]" for i in range(8)]
    assert [digit for _, digit, _ in rows] == expected.argmax(axis=1).tolist()
    assert [p for _, _, p in rows] == pytest.approx(expected.max(axis=1).tolist(), abs=1e-4)

    # The registry's champion: the version the alias names now (other tests may have trained a
    # better mlp on the shared repository since the pipeline ran), through its logged model.
    champion = parse(predict_cli(trained_repo, batch, "--model", "models:/mnist-mlp@champion").stdout)
    version = MlflowClient(store_uri(trained_repo)).get_model_version_by_alias("mnist-mlp", "champion")
    mlflow.set_tracking_uri(store_uri(trained_repo))
    try:
        registered = mlflow.tensorflow.load_model(version.source).predict(x[:8], verbose=0)
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: back to the default; MLflow's annotation omits it
    assert [digit for _, digit, _ in champion] == registered.argmax(axis=1).tolist()
    assert [p for _, _, p in champion] == pytest.approx(registered.max(axis=1).tolist(), abs=1e-4)

    photos = []
    for i in range(8):
        photos.append(tmp_path / f"digit{i}.{'jpg' if i % 2 else 'png'}")
        as_photo(x[i], 200 + 10 * i).save(photos[-1])
    from_photos = parse(predict_cli(trained_repo, *photos, "--model", "models/mlp").stdout)
    agree = sum(a[1] == b[1] for a, b in zip(from_photos, rows, strict=True))
    assert agree >= 6, (from_photos, rows)


BAD_INPUTS = [
    ("notes.png", lambda p: p.write_text("not an image"), "not an image Pillow can read"),
    ("empty.jpg", lambda p: p.write_bytes(b""), "the file is empty"),
    ("shape.npy", lambda p: np.save(p, np.zeros((3, 28), np.uint8)), "array of shape (3, 28); expected (28, 28)"),
    ("nan.npy", lambda p: np.save(p, np.full((2, 28, 28), np.nan)), "NaN or infinite values"),
    ("scaled.npy", lambda p: np.save(p, np.full((2, 28, 28), 0.5)), "look scaled to [0, 1]"),
    ("big.npy", lambda p: np.save(p, np.full((28, 28), 300)), "values from 300 to 300"),
    ("blank.png", lambda p: Image.new("L", (50, 50), 200).save(p), "the image is blank"),
    ("missing.png", lambda p: None, "no such file"),
    (
        "huge.png",
        lambda p: png_of_zeros(p, 13000, 13000),
        "the image is too large (13000×13000); predict reads at most",
    ),
    (
        "zeros.npy",
        lambda p: np.lib.format.open_memmap(p, "w+", np.uint8, (1_913_266, 28, 28)).flush(),
        "1,913,266 images of uint8, 1,431 MiB; predict reads at most 256 MiB per file",
    ),
    ("blank.npy", lambda p: np.save(p, np.zeros((4, 784), np.uint8)), "4 of its 4 images are blank (one colour"),
]


@pytest.mark.parametrize(("name", "make", "expected"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_get_one_line_and_exit_2(trained_repo, tmp_path, name, make, expected):
    path = tmp_path / name
    make(path)
    done = predict_cli(trained_repo, path, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and done.stdout == ""
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and expected in lines[0], lines


def test_a_model_that_is_not_there_gets_one_line_and_exit_2(trained_repo, test_images, tmp_path):
    batch = tmp_path / "one.npy"
    np.save(batch, test_images[0][:1])
    for source, expected in (
        ("models/cnn", "no model there"),
        ("models:/mnist-cnn@champion", "cannot load the model from"),
    ):
        done = predict_cli(trained_repo, batch, "--model", source, check=False)
        # The last line is ours; TensorFlow's start-up lines may come before it.
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 2 and last.startswith(f"error: {source}: ") and expected in last, done.stderr
