"""Test-set metrics with scikit-learn and the report files DVC declares; no TensorFlow here."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, log_loss
from sklearn.metrics import precision_recall_fscore_support

from mnist_pipeline.atomic import atomic_dir

DIGITS = list(range(10))


def metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict:
    """Nested test metrics, shaped so `dvc metrics show` reads test.macro.precision and so on."""
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=DIGITS, zero_division=0)
    averages = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=DIGITS, average=average, zero_division=0)
        averages[average] = {"precision": p, "recall": r, "f1": f}
    per_class = {
        str(d): {"precision": precision[d], "recall": recall[d], "f1": f1[d], "support": support[d]} for d in DIGITS
    }
    result = {
        "accuracy": accuracy_score(y_true, y_pred),
        "log_loss": log_loss(y_true, probabilities, labels=DIGITS),
        **averages,
        "per_class": per_class,
    }
    return {"test": _plain(result)}


def _plain(value):
    """NumPy scalars to Python numbers, rounded for readable diffs."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (np.integer, int)):
        return int(value)
    return round(float(value), 6)


def flat_metrics(nested: dict) -> dict[str, float]:
    """MLflow names: test_accuracy, test_macro_precision, …, precision_3, recall_3, f1_3."""
    test = nested["test"]
    flat = {"test_accuracy": test["accuracy"], "test_log_loss": test["log_loss"]}
    for average in ("macro", "weighted"):
        flat |= {f"test_{average}_{k}": v for k, v in test[average].items()}
    for digit, scores in test["per_class"].items():
        flat |= {f"{k}_{digit}": v for k, v in scores.items() if k != "support"}
    return flat


def write_reports(out_dir: Path, y_true: np.ndarray, probabilities: np.ndarray, results: dict, title: str) -> None:
    """metrics.json, predictions.csv (DVC confusion plot), confusion_matrix.{csv,png}, classification_report.txt."""
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, labels=DIGITS)
    with atomic_dir(out_dir) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        pd.DataFrame({"actual": y_true, "predicted": y_pred}).to_csv(tmp / "predictions.csv", index=False)
        pd.DataFrame(matrix, index=pd.Index(DIGITS, name="actual"), columns=DIGITS).to_csv(tmp / "confusion_matrix.csv")
        report = classification_report(y_true, y_pred, labels=DIGITS, digits=4, zero_division=0)
        (tmp / "classification_report.txt").write_text(report)
        plot_confusion(matrix, tmp / "confusion_matrix.png", title)


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and none on CI
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    ConfusionMatrixDisplay(matrix, display_labels=DIGITS).plot(ax=ax, cmap="Blues", colorbar=True, values_format="d")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
