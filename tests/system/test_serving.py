"""`mlflow models serve` on the registry's champion answers /invocations: raw uint8 pixels in,
probabilities out, because the rescaling lives inside the model."""

import json
import urllib.request
from pathlib import Path

import keras
import numpy as np

from mnist_pipeline.core.layout import MODEL_FILE, Layout
from mnist_pipeline.data.splits import load_split
from tests.support.harness import assert_reads_clean, free_port, repo_env, running, store_uri, venv_bin


def test_the_champion_served_by_mlflow_answers_invocations_with_probabilities(trained_repo, tmp_path):
    x, _ = load_split(Layout(trained_repo).processed, "test")
    port = free_port()
    # The command docs/registry.md shows, as a user types it.
    serve = [
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
    env = repo_env(trained_repo, MLFLOW_TRACKING_URI=store_uri(trained_repo), COLUMNS="120")
    log = tmp_path / "serve.log"
    with running(serve, f"http://127.0.0.1:{port}/ping", cwd=trained_repo, env=env, log=log):
        for _ in range(2):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=json.dumps({"inputs": x[:16].tolist()}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                served = np.array(json.load(response)["predictions"])
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
