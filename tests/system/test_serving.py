"""`mlflow models serve` on the registry's champion answers /invocations: raw uint8 pixels in,
probabilities out, because the rescaling lives inside the model; (N, 784) as well as (N, 28, 28),
as `predict` reads them; a request it cannot read gets a 400 that describes it, never repeats it."""

import json
import urllib.error
import urllib.request
from pathlib import Path

import keras
import numpy as np

from mnist_pipeline.core.layout import MODEL_FILE, Layout
from mnist_pipeline.data.splits import load_split
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


def invoke(port: int, pixels) -> tuple[int, str]:
    """POST {"inputs": pixels} to /invocations; the status and the body."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps({"inputs": np.asarray(pixels).tolist()}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def predictions(port: int, pixels) -> np.ndarray:
    status, body = invoke(port, pixels)
    assert status == 200, body
    return np.array(json.loads(body)["predictions"])


def test_the_champion_served_by_mlflow_answers_invocations_with_probabilities(trained_repo, tmp_path):
    x, _ = load_split(Layout(trained_repo).processed, "test")
    port = free_port()
    env = repo_env(trained_repo, MLFLOW_TRACKING_URI=store_uri(trained_repo), COLUMNS="120")
    log = tmp_path / "serve.log"
    with running(serve_command(port), f"http://127.0.0.1:{port}/ping", cwd=trained_repo, env=env, log=log):
        for _ in range(2):
            served = predictions(port, x[:16])
    # Its log, read as a person would: the requests, and no TensorFlow start-up lines or progress bars.
    text = log.read_text()
    assert text.count('"POST /invocations HTTP/1.1" 200') == 2, text
    assert_reads_clean(text, "mlflow models serve")
    assert "ms/step" not in text, text
    assert served.shape == (16, 10)
    assert np.allclose(served.sum(axis=1), 1, atol=1e-4)
    # The same model, loaded from the pipeline's output folder, gives the same probabilities.
    local = keras.models.load_model(Layout(trained_repo).model_dir("logistic") / MODEL_FILE).predict(x[:16], verbose=0)
    assert np.allclose(served, local, atol=1e-5)


# Requests the served model cannot read, each of values found nowhere else in the answer.
BAD_REQUESTS = [
    ("shape", np.full((2, 3, 5), 217), "an array of shape (2, 3, 5); the model takes pixels 0–255 shaped (N, 28, 28)"),
    ("range", np.full((1, 784), 4242), "an array of int64 holding values below 0, above 255, NaN or infinite"),
    ("scaled", np.full((1, 28, 28), 0.4321), "an array of floats in [0, 1]; the model takes pixel intensities 0–255"),
]


def test_the_served_model_takes_flat_images_and_never_echoes_a_request(trained_repo, tmp_path):
    """Before: (N, 784) got a 400, and every 400 quoted the request (`Failed to predict data
    '[[217 217 …]]'`, `Python integer 4242 out of bounds for uint8`)."""
    x, _ = load_split(Layout(trained_repo).processed, "test")
    port = free_port()
    env = repo_env(trained_repo, MLFLOW_TRACKING_URI=store_uri(trained_repo))
    with running(serve_command(port), f"http://127.0.0.1:{port}/ping", cwd=trained_repo, env=env, log=tmp_path / "log"):
        square = predictions(port, x[:8])
        flat = predictions(port, x[:8].reshape(8, 784))
        answers = {name: invoke(port, pixels) for name, pixels, _ in BAD_REQUESTS}
    assert np.array_equal(flat, square) and square.shape == (8, 10)
    for name, pixels, expected in BAD_REQUESTS:
        status, body = answers[name]
        value = str(pixels.flat[0])
        assert status == 400 and json.loads(body)["message"].startswith(expected), body
        assert value not in body, body
