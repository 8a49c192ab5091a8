import json

import numpy as np
import pandas as pd
import pytest

from mnist_pipeline.metrics import flat_metrics, metrics, write_reports


def one_hot(predicted, confidence=0.9):
    probs = np.full((len(predicted), 10), (1 - confidence) / 9)
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def test_metrics_match_a_hand_computed_case():
    y_true = np.array([0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9])
    y_pred = np.array([0, 1, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9])  # one 0 taken for a 1
    test = metrics(y_true, one_hot(y_pred))["test"]
    assert test["accuracy"] == pytest.approx(12 / 13, abs=1e-6)
    assert test["per_class"]["0"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3, abs=1e-6), "support": 2}
    assert test["per_class"]["1"]["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert test["per_class"]["1"]["recall"] == 1.0
    assert test["macro"]["recall"] == pytest.approx((0.5 + 9) / 10, abs=1e-6)
    assert test["log_loss"] == pytest.approx(-(12 * np.log(0.9) + np.log(0.1 / 9)) / 13, abs=1e-5)


def test_flat_names_line_up_for_mlflow():
    flat = flat_metrics(metrics(np.arange(10), one_hot(np.arange(10))))
    assert flat["test_accuracy"] == 1.0
    assert {"test_macro_precision", "test_weighted_f1", "precision_3", "recall_9", "f1_0"} <= set(flat)
    assert not any(name.startswith("support") for name in flat)


def test_reports_are_written_together(tmp_path):
    y_true = np.array([0, 1, 2, 2])
    probs = one_hot(np.array([0, 1, 2, 1]))
    results = metrics(y_true, probs)
    write_reports(tmp_path / "eval", y_true, probs, results, "test")
    out = tmp_path / "eval"
    assert json.loads((out / "metrics.json").read_text()) == results
    assert pd.read_csv(out / "predictions.csv").values.tolist() == [[0, 0], [1, 1], [2, 2], [2, 1]]
    matrix = pd.read_csv(out / "confusion_matrix.csv", index_col="actual")
    assert matrix.shape == (10, 10) and matrix.loc[2, "1"] == 1 and matrix.values.sum() == 4
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "precision" in (out / "classification_report.txt").read_text()
