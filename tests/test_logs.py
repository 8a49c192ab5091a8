"""The logs people read: `dvc repro`, `predict` (the served model's log: tests/test_serving.py) carry
no TensorFlow start-up lines and no colour codes, keep Keras's line per epoch, and say true things."""

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, REPRO_LOG, TF_START_UP, assert_reads_clean, repo_env, sh, store_uri
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.training.quiet_tf import start_up_noise

EPOCH_LINE = re.compile(r"^\d+/\d+ - \d+s - \d+ms/step - accuracy: [\d.]+ - loss: [\d.]+ - "
                        r"val_accuracy: [\d.]+ - val_loss: [\d.]+$", re.MULTILINE)
KEPT_LINE = re.compile(r"^INFO mnist_pipeline\.training\.trainer: (?P<model>\w+): (?P<ran>\d+) of \d+ epochs in [\d.]+ s; "
                       r"kept the weights of epoch (?P<epoch>\d+) \((?P<why>[^)]*)\): "
                       r"val_accuracy (?P<val_accuracy>[\d.]+), val_loss (?P<val_loss>[\d.]+)$", re.MULTILINE)


def stage_logs(log: str) -> dict[str, str]:
    """`dvc repro`'s output cut at each "Running stage" line: {stage: what it printed}."""
    parts = re.split(r"^Running stage '([^']+)':$", log, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_dvc_repro_reads_clean_with_one_line_per_epoch(trained_repo):
    log = (trained_repo / REPRO_LOG).read_text()
    assert_reads_clean(log, "dvc repro")
    stages = stage_logs(log)
    assert {"train@logistic", "train@mlp", "evaluate@logistic", "evaluate@mlp"} <= set(stages), log
    for model in ("logistic", "mlp"):  # one epoch each (small_params)
        assert len(EPOCH_LINE.findall(stages[f"train@{model}"])) == 1, stages[f"train@{model}"]
    assert "absl" not in log and "\r" not in log and "━" not in log, log


def test_the_train_log_names_the_epoch_whose_weights_are_kept(trained_repo):
    """mlp trains without early stopping (the last epoch's weights), logistic with it (the best's)."""
    log = (trained_repo / REPRO_LOG).read_text()
    kept = {m["model"]: m for m in KEPT_LINE.finditer(log)}
    assert set(kept) == {"logistic", "mlp"}
    # The runs this log's stages opened (other tests may retrain models/ of the shared repository since).
    run_ids = {model: run_id for run_id, model in re.findall(r"MLflow run ([0-9a-f]{32}) \((logistic|mlp)-", log)}
    client = MlflowClient(store_uri(trained_repo))
    for model, why in (("mlp", "the last"), ("logistic", "lowest val_loss, restored by early stopping")):
        run_id = run_ids[model]
        history = {name: [m.value for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)]
                   for name in ("val_loss", "val_accuracy")}
        epoch = len(history["val_loss"]) if model == "mlp" else int(np.argmin(history["val_loss"])) + 1
        assert kept[model]["why"] == why
        assert int(kept[model]["epoch"]) == epoch and int(kept[model]["ran"]) == len(history["val_loss"])
        assert kept[model]["val_accuracy"] == f"{history['val_accuracy'][epoch - 1]:.4f}"
        assert kept[model]["val_loss"] == f"{history['val_loss'][epoch - 1]:.4f}"


def test_kept_epoch_is_the_one_whose_weights_the_model_holds():
    """A real fit where the last epoch is not the best: with early stopping the model holds the
    best epoch's weights, without it the last epoch's, and fit says which."""
    import keras

    from mnist_pipeline.core.params import MLPParams
    from mnist_pipeline.training.fit_loop import fit

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 2, 64)
    x_val, y_val = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 2, 64)  # noise: it overfits
    for patience in (0, 50):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, "relu"), keras.layers.Dense(2, "softmax")])
        model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
        # fit reads the epochs, the batch size and the patience; the model above is already built.
        params = MLPParams(type="mlp", hidden_units=[64], activation="relu", dropout=0.0, optimizer="adam",
                           learning_rate=0.05, lr_schedule="constant", epochs=8, batch_size=32,
                           early_stopping_patience=patience, seed=1)
        curves, kept_epoch, _ = fit(model, params, (x, y), (x_val, y_val))
        assert curves["val_loss"].idxmin() != len(curves) - 1  # else this proves nothing
        kept = curves.iloc[kept_epoch - 1]
        val_loss, val_accuracy = model.evaluate(x_val, y_val, verbose=0)
        assert kept["epoch"] == (curves["val_loss"].idxmin() + 1 if patience else len(curves))
        assert val_loss == pytest.approx(kept["val_loss"], rel=1e-5)
        assert val_accuracy == pytest.approx(kept["val_accuracy"])


def test_predict_reads_clean(trained_repo, tmp_path):
    x, _ = load_split(Layout(trained_repo).processed, "test")
    np.save(tmp_path / "batch.npy", x[:3])
    env = repo_env(trained_repo, MLFLOW_TRACKING_URI=store_uri(trained_repo), COLUMNS="120")
    done = subprocess.run([sys.executable, "-m", "mnist_pipeline", "predict", str(tmp_path / "batch.npy"),
                           "--model", "models:/mnist-logistic@champion"], cwd=trained_repo, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert_reads_clean(done.stdout + done.stderr, "predict")
    assert done.stdout.splitlines()[0].split() == ["input", "digit", "probability"]
    assert len(done.stdout.splitlines()) == 4 and done.stderr == "", done.stdout + done.stderr


def test_tensorflow_prints_start_up_lines_that_tf_cpp_min_log_level_0_shows(tmp_path):
    """Without the filter TensorFlow prints its start-up lines, so the tests above can fail;
    TF_CPP_MIN_LOG_LEVEL=0 is the user's way to see them."""
    probe = "from mnist_pipeline.training.quiet_tf import import_tensorflow; import_tensorflow()"
    loud = sh(tmp_path, sys.executable, "-c", probe, env=repo_env(REPO, TF_CPP_MIN_LOG_LEVEL="0"))
    assert sum(text in loud.stderr for text in TF_START_UP) >= 3, loud.stderr


def test_the_filter_drops_start_up_info_and_keeps_warnings_and_errors():
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "I0000 00:00:1795477247.754250    8938 port.cc:153] oneDNN custom operations are on.\n",
        "I0000 00:00:1795477247.755572    8938 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
        "GPU will not be used.\n",
        "E0000 00:00:1795477031.577649    5993 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n",
        "W0000 00:00:1795477031.577649    5993 some_op.cc:12] a real warning\n",
        "E0000 00:00:1795477031.577649    5993 other.cc:7] a real error\n",
        "Traceback (most recent call last):\n",
    ]
    assert start_up_noise(lines) == [True, True, True, True, False, False, False]
    # With a CUDA driver present, a failing cuInit is a real error.
    assert start_up_noise([lines[3]]) == [False]
