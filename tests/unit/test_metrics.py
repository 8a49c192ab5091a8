import json

import numpy as np
import pandas as pd

from mnist_pipeline.evaluation.scoring import headline, headline_names, per_class, per_class_names, write_reports


def one_hot(predicted, confidence=0.9):
    probs = np.full((len(predicted), 10), (1 - confidence) / 9)
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


Y_TRUE = np.array([0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9])
Y_PRED = np.array([0, 1, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9])  # one 0 taken for a 1


def test_scores_match_a_hand_computed_case():
    scores = headline(Y_TRUE, one_hot(Y_PRED))
    assert list(scores) == ["accuracy", "log_loss", "precision", "recall", "f1"]
    assert scores["accuracy"] == round(12 / 13, 4)
    assert scores["recall"] == round((0.5 + 9) / 10, 4)
    assert scores["log_loss"] == round(-(12 * np.log(0.9) + np.log(0.1 / 9)) / 13, 4)
    classes = per_class(Y_TRUE, Y_PRED).set_index("digit")
    assert classes.loc[0].to_dict() == {"precision": 1.0, "recall": 0.5, "f1": round(2 / 3, 4), "support": 2}
    assert classes.loc[1, "precision"] == round(2 / 3, 4) and classes.loc[1, "recall"] == 1.0
    assert list(classes.index) == list(range(10))


def test_mlflow_names_line_up_with_the_files():
    scores = headline(np.arange(10), one_hot(np.arange(10)))
    flat = headline_names(scores) | per_class_names(per_class(np.arange(10), np.arange(10)))
    assert flat["test_accuracy"] == 1.0 == scores["accuracy"]
    assert {"test_log_loss", "test_macro_precision", "test_macro_f1", "precision_3", "recall_9", "f1_0"} <= set(flat)
    assert len(flat) == 5 + 30 and not any(name.startswith("support") for name in flat)


def test_reports_are_written_together(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    y_true = np.array([0, 1, 2, 2])
    probs = one_hot(np.array([0, 1, 2, 1]))
    scores, classes = headline(y_true, probs), per_class(y_true, probs.argmax(axis=1))
    write_reports(tmp_path / "eval", "mlp", images, y_true, probs, scores, classes)
    out = tmp_path / "eval"
    assert json.loads((out / "metrics.json").read_text()) == {"mlp": scores}
    assert pd.read_csv(out / "per_class.csv").equals(classes)
    assert pd.read_csv(out / "predictions.csv").values.tolist() == [[0, 0], [1, 1], [2, 2], [2, 1]]
    matrix = pd.read_csv(out / "confusion_matrix.csv", index_col="actual")
    assert matrix.shape == (10, 10) and matrix.loc[2, "1"] == 1 and matrix.values.sum() == 4
    for picture in ("confusion_matrix.png", "misclassified.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "precision" in (out / "classification_report.txt").read_text()


def test_a_perfect_model_still_gets_a_misclassified_picture(tmp_path):
    """No mistakes is a result too: the picture says so rather than going missing."""
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    y = np.array([1, 2, 3])
    write_reports(tmp_path / "eval", "mlp", images, y, one_hot(y), headline(y, one_hot(y)), per_class(y, y))
    assert (tmp_path / "eval" / "misclassified.png").stat().st_size > 1000
