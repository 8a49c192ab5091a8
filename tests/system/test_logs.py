"""The logs people read: `dvc repro`, `predict` (the served model's log: tests/system/test_serving.py) carry
no TensorFlow start-up lines and no colour codes, keep Keras's line per epoch, and say true things."""

import re
import subprocess
import sys

import numpy as np
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.data.splits import load_split
from tests.support.harness import REPRO_LOG, assert_reads_clean, repo_env, store_uri

EPOCH_LINE = re.compile(
    r"^\d+/\d+ - \d+s - \d+ms/step - accuracy: [\d.]+ - loss: [\d.]+ - "
    r"val_accuracy: [\d.]+ - val_loss: [\d.]+$",
    re.MULTILINE,
)

KEPT_LINE = re.compile(
    r"^INFO mnist_pipeline\.training\.trainer: (?P<model>\w+): (?P<ran>\d+) of \d+ epochs in [\d.]+ s; "
    r"kept the weights of epoch (?P<epoch>\d+) \((?P<why>[^)]*)\): "
    r"val_accuracy (?P<val_accuracy>[\d.]+), val_loss (?P<val_loss>[\d.]+)$",
    re.MULTILINE,
)


def stage_logs(log: str) -> dict[str, str]:
    """`dvc repro`'s output cut at each "Running stage" line: {stage: what it printed}."""
    parts = re.split(r"^Running stage '([^']+)':$", log, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


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
        history = {
            name: [m.value for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)]
            for name in ("val_loss", "val_accuracy")
        }
        epoch = len(history["val_loss"]) if model == "mlp" else int(np.argmin(history["val_loss"])) + 1
        assert kept[model]["why"] == why
        assert int(kept[model]["epoch"]) == epoch and int(kept[model]["ran"]) == len(history["val_loss"])
        assert kept[model]["val_accuracy"] == f"{history['val_accuracy'][epoch - 1]:.4f}"
        assert kept[model]["val_loss"] == f"{history['val_loss'][epoch - 1]:.4f}"


def test_predict_reads_clean(trained_repo, tmp_path):
    x, _ = load_split(Layout(trained_repo).processed, "test")
    np.save(tmp_path / "batch.npy", x[:3])
    env = repo_env(trained_repo, MLFLOW_TRACKING_URI=store_uri(trained_repo), COLUMNS="120")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_pipeline",
            "predict",
            str(tmp_path / "batch.npy"),
            "--model",
            "models:/mnist-logistic@champion",
        ],
        cwd=trained_repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert_reads_clean(done.stdout + done.stderr, "predict")
    assert done.stdout.splitlines()[0].split() == ["input", "digit", "probability", "unsure"]
    assert len(done.stdout.splitlines()) == 4 and done.stderr == "", done.stdout + done.stderr
