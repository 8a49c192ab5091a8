"""`predict`: images of any size and mode, .npy batches, models from a path, a run or the registry."""

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image, PngImagePlugin

from mnist_pipeline.core.layout import MODEL_FILE, Layout
from mnist_pipeline.data import idx
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.tools.predict import to_mnist
from tests.support import photos
from tests.support.cli import run_main
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


def predict_cli(repo, *args, check=True, env=None, process=False):
    """`predict ARGS` in `repo`, in this process (tests/support/cli.py: a new one would load TensorFlow
    and MLflow first, seconds per call), or with `process` in a new one, as a user runs it: the tests
    of the answers a user reads, of exit 2 with TensorFlow's start-up around it, and of a PYTHONPATH."""
    env = env or repo_env(repo, MLFLOW_TRACKING_URI=store_uri(repo))
    argv = ["predict", *map(str, args)]
    if process:
        return sh(repo, "python", "-m", "mnist_pipeline", *argv, check=check, env=env)
    done = run_main(argv, repo, env)
    if check and done.returncode != 0:
        raise AssertionError(f"predict exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def parse(output: str) -> list[tuple[str, int, float, bool]]:
    lines = output.strip().splitlines()
    assert lines[0].split() == ["input", "digit", "probability", "unsure"], lines[0]
    rows = [line.split() for line in lines[1:]]
    return [(name, int(digit), float(p), {"yes": True, "no": False}[unsure]) for name, digit, p, unsure in rows]


def test_predictions_from_npy_files_images_and_the_registry_agree(trained_repo, test_images, tmp_path):
    import keras

    x, _ = test_images
    batch = tmp_path / "batch.npy"
    np.save(batch, x[:8])
    expected = keras.models.load_model(Layout(trained_repo).model_dir("mlp") / MODEL_FILE).predict(x[:8], verbose=0)

    rows = parse(predict_cli(trained_repo, batch, "--model", "models/mlp", process=True).stdout)
    assert [row[0] for row in rows] == [f"{batch}[{i}]" for i in range(8)]
    assert [row[1] for row in rows] == expected.argmax(axis=1).tolist()
    assert [row[2] for row in rows] == pytest.approx(expected.max(axis=1).tolist(), abs=1e-4)

    # The registry's champion: the version the alias names now (other tests may have trained a
    # better mlp on the shared repository since the pipeline ran), through its logged model.
    champion = parse(predict_cli(trained_repo, batch, "--model", "models:/mnist-mlp@champion").stdout)
    version = MlflowClient(store_uri(trained_repo)).get_model_version_by_alias("mnist-mlp", "champion")
    mlflow.set_tracking_uri(store_uri(trained_repo))
    try:
        registered = mlflow.tensorflow.load_model(version.source).predict(x[:8], verbose=0)
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: back to the default; MLflow's annotation omits it
    assert [row[1] for row in champion] == registered.argmax(axis=1).tolist()
    assert [row[2] for row in champion] == pytest.approx(registered.max(axis=1).tolist(), abs=1e-4)

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
    ("bomb.png", lambda p: png_with_text(p, 20 << 20), "a text chunk in it (PNG metadata) inflates past Pillow's"),
]


def png_with_text(path: Path, size: int) -> None:
    """A small digit PNG whose zTXt chunk inflates to `size` bytes."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a" * size, zip=True)
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(path, pnginfo=info)


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
        done = predict_cli(trained_repo, batch, "--model", source, check=False, process=True)
        # The last line is ours; TensorFlow's start-up lines may come before it.
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 2 and last.startswith(f"error: {source}: ") and expected in last, done.stderr


def one_error_line(done) -> str:
    """The error line of a refused run: exit 2, nothing on stdout, no traceback; TensorFlow's
    start-up lines may come before it."""
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_models_predict_cannot_read_get_one_line_and_exit_2(trained_repo, test_images, tmp_path):
    """Before: a 57-line YAML traceback, `KeyError: 'tensorflow'`, `ModuleNotFoundError: boto3` or
    `NoCredentialsError`, `ValueError: not enough values to unpack`."""
    batch = tmp_path / "one.npy"
    np.save(batch, test_images[0][:1])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "MLmodel").write_text("flavors: [\n  tensorflow: keras: 3\n")
    (tmp_path / "sklearn").mkdir()
    (tmp_path / "sklearn" / "MLmodel").write_text("flavors:\n  python_function: {}\n  sklearn: {}\n")
    for source, expected in (
        (tmp_path / "bad", "its MLmodel is not valid YAML at line 2 (expected ',' or ']', but got ':'); restore"),
        (tmp_path / "sklearn", "not a Keras model: its MLmodel names no tensorflow flavor (flavors: python_f"),
        ("s3://nobucket/model", "predict does not load s3: URIs; give a .keras file, a folder holding model.keras"),
        ("http://127.0.0.1:9/model", "predict does not load http: URIs; give a .keras file"),
    ):
        last = one_error_line(predict_cli(trained_repo, batch, "--model", source, check=False))
        assert last.startswith(f"error: {source}: ") and expected in last, last


def test_a_model_whose_artifact_store_cannot_be_read_gets_one_line(trained_repo, test_images, tmp_path):
    """A logged model in a store whose artifacts live in S3, read without S3 credentials, or where
    boto3 is not installed (a folder on PYTHONPATH whose boto3 cannot be imported stands for that)."""
    store = f"sqlite:///{tmp_path / 'remote.db'}"
    client = MlflowClient(store)
    experiment = client.create_experiment("remote", artifact_location="s3://nobucket/mlflow")
    source = f"models:/{client.create_logged_model(experiment, name='mlp').model_id}"
    batch = tmp_path / "one.npy"
    np.save(batch, test_images[0][:1])
    env = {k: v for k, v in repo_env(trained_repo).items() if not k.startswith("AWS_")}
    env |= {  # no credentials from this machine, and no minutes spent asking EC2's metadata service
        "MLFLOW_TRACKING_URI": store,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    last = one_error_line(predict_cli(trained_repo, batch, "--model", source, check=False, env=env, process=True))
    assert last == (
        f"error: {source}: cannot download the model from its artifact store (NoCredentialsError: Unable to "
        "locate credentials); check the store's address and your credentials for it"
    )
    (tmp_path / "no_boto3" / "boto3").mkdir(parents=True)
    (tmp_path / "no_boto3" / "boto3" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'boto3'\", name='boto3')\n"
    )
    env["PYTHONPATH"] = f"{tmp_path / 'no_boto3'}{os.pathsep}{env['PYTHONPATH']}"
    last = one_error_line(predict_cli(trained_repo, batch, "--model", source, check=False, env=env, process=True))
    assert last.startswith(f"error: {source}: its artifact store needs the Python package boto3, which is not ")


def test_a_deleted_runs_model_predicts_with_a_warning(trained_repo, test_images, tmp_path):
    batch = tmp_path / "one.npy"
    np.save(batch, test_images[0][:1])
    run_id = json.loads((Layout(trained_repo).model_dir("logistic") / "mlflow_run.json").read_text())["run_id"]
    source = f"runs:/{run_id}/logistic"
    client = MlflowClient(store_uri(trained_repo))
    live = predict_cli(trained_repo, batch, "--model", source)
    client.delete_run(run_id)
    try:
        deleted = predict_cli(trained_repo, batch, "--model", source)
    finally:
        client.restore_run(run_id)  # the repository is shared with other tests
    assert "deleted" not in live.stderr
    assert deleted.stdout == live.stdout and len(parse(deleted.stdout)) == 1
    assert (
        f"WARNING mnist_pipeline.tools.predict: {source}: run {run_id} is deleted (in MLflow's trash, where "
        f"`mlflow gc` removes its model for good); predicting with it anyway: restore it with "
        f"`mlflow runs restore --run-id {run_id}`"
    ) in deleted.stderr


def test_a_file_name_cannot_forge_a_row_or_an_escape_code(trained_repo, test_images, tmp_path):
    """A newline in a name once printed a second row: `fake.png  9  1.0000` read as a prediction."""
    forged = tmp_path / "ok\nfake.png  9  1.0000.png"
    as_photo(test_images[0][0], 100).save(forged, format="PNG")
    done = predict_cli(trained_repo, forged, "--model", "models/mlp")
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"{tmp_path}/ok\\nfake.png  9  1.0000.png  "), lines
    # An error line names the file the same way: a terminal shows the escape code, it does not obey it.
    text = tmp_path / "bad\x1b[2J\u202egnp.png"
    text.write_text("not an image")
    last = one_error_line(predict_cli(trained_repo, text, "--model", "models/mlp", check=False))
    assert last.startswith(f"error: {tmp_path}/bad\\x1b[2J\\u202egnp.png: not an image Pillow can read")
    assert last.isprintable()


@pytest.fixture(scope="module")
def readable_model(mnist_files, tmp_path_factory) -> Path:
    """A model that reads MNIST well enough for "read right" to mean something (about 0.95 on the
    test set; the shared repository's learnt from 400 images and reads a quarter of them right):
    10,000 training images, two epochs, raw uint8 pixels in, as the pipeline's models take them."""
    import keras

    x = idx.decode(mnist_files["train-images-idx3-ubyte"])[:10_000]
    y = idx.decode(mnist_files["train-labels-idx1-ubyte"])[:10_000]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28), dtype="uint8"),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=128, verbose=0)
    path = tmp_path_factory.mktemp("readable") / "model.keras"
    model.save(path)
    return path


def test_photos_are_read_as_their_clean_digits_are(trained_repo, readable_model, test_images, tmp_path):
    """MNIST test digits photographed (lighting gradient 130 → 220 with noise, a shadow, ruled
    lines, thick strokes, marks in the margin), through predict's command: those the model reads
    right in MNIST's form, it reads right as photos. Before (the full mlp, 300 digits): gradient
    0.087, shadow 0.067, ruled lines 0.153, thick strokes 0.163, margin marks 0.053 of them right;
    after: 0.980 to 0.997."""
    x, y = test_images
    n = 60
    np.save(tmp_path / "clean.npy", x[:n])
    model = ("--model", readable_model)
    clean = np.array([row[1] for row in parse(predict_cli(trained_repo, tmp_path / "clean.npy", *model).stdout)])
    right = clean == y[:n]
    paths = []
    for condition, options in photos.CONDITIONS.items():
        for i in range(n):
            paths.append(tmp_path / f"{condition.replace(' ', '_')}_{i}.png")
            Image.fromarray(photos.photo(x[i], seed=i, **options)).save(paths[-1])
    read = np.array([row[1] for row in parse(predict_cli(trained_repo, *paths, *model).stdout)]).reshape(-1, n)
    scores = {c: float(np.mean(r[right] == y[:n][right])) for c, r in zip(photos.CONDITIONS, read, strict=True)}
    assert right.sum() >= 50 and min(scores.values()) >= 0.9, (right.sum(), scores)


def test_what_is_not_one_digit_is_flagged_unsure(trained_repo, test_images, tmp_path):
    """Before: a strip of noise was read as a digit like any other, nothing said otherwise."""
    x, _ = test_images
    inputs = {
        "noise.png": photos.noise_strip(),
        "speck.png": photos.speck(),
        "several.png": photos.several([x[0], x[1], x[2]]),
    }
    for name, image in inputs.items():
        Image.fromarray(image).save(tmp_path / name)
    confident = tmp_path / "confident.npy"
    np.save(confident, load_split(Layout(trained_repo).processed, "validation")[0])
    rows = parse(predict_cli(trained_repo, *(tmp_path / n for n in inputs), confident, "--model", "models/mlp").stdout)
    assert [row[3] for row in rows[:3]] == [True, True, True], rows[:3]
    # The validation digits the model is most sure of are not flagged.
    most = sorted(rows[3:], key=lambda row: -row[2])[:10]
    assert not any(row[3] for row in most), most
    thresholds = json.loads((Layout(trained_repo).model_dir("mlp") / "unsure.json").read_text())
    assert 0 < thresholds["confidence"] < 1 and thresholds["max_marks"] >= 1


def test_a_model_without_thresholds_predicts_and_says_so_once(trained_repo, test_images, tmp_path):
    x, _ = test_images
    older = tmp_path / "older"
    older.mkdir()
    (older / MODEL_FILE).write_bytes((Layout(trained_repo).model_dir("mlp") / MODEL_FILE).read_bytes())
    np.save(tmp_path / "batch.npy", x[:3])
    Image.fromarray(photos.noise_strip()).save(tmp_path / "noise.png")
    done = predict_cli(trained_repo, tmp_path / "batch.npy", tmp_path / "noise.png", "--model", older)
    assert len(parse(done.stdout)) == 4 and parse(done.stdout)[3][3]  # several marks: flagged without thresholds
    assert done.stderr.count("no readable unsure.json beside the model") == 1, done.stderr
