"""`mlflow models serve` on the registry's champion answers /invocations: raw uint8 pixels
(N, 28, 28) or (N, 784), as `predict` reads a .npy, or image files' bytes base64-encoded, prepared
by the code `predict` runs (data/photo.py, shipped in the model); per input the digit, its
probability, the unsure flag and the ten probabilities; a request it cannot read gets a 400 that
describes it, never repeats it."""

import base64
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from mnist_pipeline.core.layout import MODEL_FILE, Layout
from mnist_pipeline.data.splits import load_split
from tests.support import photos
from tests.support.cli import run_main
from tests.support.harness import assert_reads_clean, free_port, repo_env, running, store_uri, venv_bin


def serve_command(port: int) -> list[str]:
    """The command docs/registry.md shows, as a user types it."""
    return [
        str(Path(venv_bin()) / "mlflow"),
        "models",
        "serve",
        "-m",
        "models:/mnist-logistic@champion",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def invoke(port: int, pixels, payload: dict | None = None) -> tuple[int, str]:
    """POST {"inputs": pixels} (or `payload`) to /invocations; the status and the body."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(payload or {"inputs": np.asarray(pixels).tolist()}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def answers(port: int, pixels, payload: dict | None = None) -> list[dict]:
    status, body = invoke(port, pixels, payload)
    assert status == 200, body
    rows = json.loads(body)["predictions"]
    assert all(set(row) == {"digit", "probability", "unsure", "probabilities"} for row in rows), rows
    return rows


def predictions(port: int, pixels) -> np.ndarray:
    """The probabilities the served model answers for pixels."""
    return np.array([row["probabilities"] for row in answers(port, pixels)])


def png_base64(gray: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def served(trained_repo, tmp_path_factory):
    """The champion served as docs/registry.md shows, once for this module's tests, which only send
    it requests (a start loads MLflow, TensorFlow and the model: 10-20 s): its port and its log."""
    port = free_port()
    env = repo_env(trained_repo, MLFLOW_TRACKING_URI=store_uri(trained_repo), COLUMNS="120")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with running(serve_command(port), f"http://127.0.0.1:{port}/ping", cwd=trained_repo, env=env, log=log):
        yield port, log


POSTED = '"POST /invocations HTTP/1.1" 200'


def log_since(log: Path, before: int, posts: int) -> str:
    """The log written after its first `before` characters, once it holds `posts` requests (the
    server writes each line just after it answers), or after 30 s."""
    deadline = time.monotonic() + 30
    while (text := log.read_text()[before:]).count(POSTED) < posts and time.monotonic() < deadline:
        time.sleep(0.1)
    return text


def test_the_champion_served_by_mlflow_answers_invocations_with_probabilities(trained_repo, served):
    x, _ = load_split(Layout(trained_repo).processed, "test")
    port, log = served
    before = len(log.read_text())
    for _ in range(2):
        answered = predictions(port, x[:16])
    # Its log, read as a person would: the requests, and no TensorFlow start-up lines or progress bars.
    since = log_since(log, before, 2)
    text = log.read_text()
    assert since.count(POSTED) == 2, text
    assert_reads_clean(text, "mlflow models serve")
    assert "ms/step" not in text, text
    assert answered.shape == (16, 10)
    assert np.allclose(answered.sum(axis=1), 1, atol=1e-4)
    # The same model, loaded from the pipeline's output folder, gives the same probabilities.
    local = keras.models.load_model(Layout(trained_repo).model_dir("logistic") / MODEL_FILE).predict(x[:16], verbose=0)
    assert np.allclose(answered, local, atol=1e-5)


# Requests the served model cannot read, each of values found nowhere else in the answer.
BAD_REQUESTS = [
    ("shape", np.full((2, 3, 5), 217), "an array of shape (2, 3, 5); the model takes pixels 0–255 shaped (N, 28, 28)"),
    ("range", np.full((1, 784), 4242), "an array of int64 holding values below 0, above 255, NaN or infinite"),
    ("scaled", np.full((1, 28, 28), 0.4321), "an array of floats in [0, 1]; the model takes pixel intensities 0–255"),
]


def test_the_served_model_takes_flat_images_and_never_echoes_a_request(trained_repo, served):
    """Before: (N, 784) got a 400, and every 400 quoted the request (`Failed to predict data
    '[[217 217 …]]'`, `Python integer 4242 out of bounds for uint8`)."""
    x, _ = load_split(Layout(trained_repo).processed, "test")
    port, _ = served
    square = predictions(port, x[:8])
    flat = predictions(port, x[:8].reshape(8, 784))
    answers = {name: invoke(port, pixels) for name, pixels, _ in BAD_REQUESTS}
    assert np.array_equal(flat, square) and square.shape == (8, 10)
    for name, pixels, expected in BAD_REQUESTS:
        status, body = answers[name]
        value = str(pixels.flat[0])
        assert status == 400 and json.loads(body)["message"].startswith(expected), body
        assert value not in body, body


def test_the_served_model_reads_photos_as_predict_does_and_says_when_it_is_unsure(trained_repo, served, tmp_path):
    """Before: it took 28×28 pixels only; a photo had to be fitted and centred by the caller (a 7
    resized naively came back as 2), and nothing said "not sure". Now the PNG's bytes of a digit
    under a lighting gradient (grey 130 → 220, noise) are read as `predict` reads the file, in both
    JSON forms MLflow's scoring server takes; noise, a speck and several digits come back unsure."""
    x, y = load_split(Layout(trained_repo).processed, "test")
    port, _ = served
    env = repo_env(trained_repo, MLFLOW_TRACKING_URI=store_uri(trained_repo))
    gradient = [png_base64(photos.photo(x[i], seed=i)) for i in range(20)]
    odd = [png_base64(photos.noise_strip()), png_base64(photos.speck()), png_base64(photos.several(list(x[:3])))]
    clean = answers(port, x[:20])
    listed = answers(port, None, {"inputs": gradient})
    split = answers(port, None, {"dataframe_split": {"columns": ["image"], "data": [[g] for g in gradient]}})
    unsure = answers(port, None, {"inputs": odd})
    status, body = invoke(port, None, {"inputs": [gradient[0], "bm90IGFuIGltYWdl"]})
    assert listed == split
    # The digits the model reads right in MNIST's form, it reads right from the photos' bytes.
    right = [i for i in range(20) if clean[i]["digit"] == y[i]]
    assert len(right) >= 6 and np.mean([listed[i]["digit"] == y[i] for i in right]) >= 0.8, (listed, right)
    # The same files, read by predict, get the same answers: one implementation.
    files = []
    for i, text in enumerate(gradient):
        files.append(str(tmp_path / f"gradient{i}.png"))
        Path(files[-1]).write_bytes(base64.b64decode(text))
    champion = "models:/mnist-logistic@champion"
    done = run_main(["predict", *files, "--model", champion], trained_repo, env)  # in-process: tests/support/cli.py
    assert done.returncode == 0, done.stderr
    rows = [line.split()[1:] for line in done.stdout.splitlines()[1:]]
    assert [(int(d), u == "yes") for d, _, u in rows] == [(a["digit"], a["unsure"]) for a in listed]
    assert [float(p) for _, p, _ in rows] == pytest.approx([a["probability"] for a in listed], abs=1e-4)
    assert [row["unsure"] for row in unsure] == [True, True, True], unsure
    assert status == 400 and json.loads(body)["message"] == (
        "input [1] is not an image Pillow can read (UnidentifiedImageError); "
        "send each image file's bytes (PNG, JPEG, …) base64-encoded"
    ), body
