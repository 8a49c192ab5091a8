"""Test-set scores with scikit-learn and the report files DVC declares; no TensorFlow here.

What people read first is a handful of headline numbers per model (`dvc exp show`, `dvc metrics
diff`), so the declared metrics file holds only those; per-class scores go to a table and a chart.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)

from mnist_pipeline.core.atomic import atomic_dir
from mnist_pipeline.core.layout import EvalReports
from mnist_pipeline.evaluation.figures import plot_confusion, plot_misclassified

DIGITS = list(range(10))
DECIMALS = 4  # 10,000 test images: accuracy has four significant decimals, nothing past them is signal


def headline(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """accuracy, log_loss, and precision, recall and F1 as macro averages (the unweighted mean over
    the ten digits). Short names: they are `dvc exp show` column headers (mlp.precision, …)."""
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=DIGITS, average="macro", zero_division=0
    )
    scores = {
        "accuracy": accuracy_score(y_true, y_pred),
        "log_loss": log_loss(y_true, probabilities, labels=DIGITS),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }
    return {name: round(float(value), DECIMALS) for name, value in scores.items()}


def per_class(y_true: np.ndarray, y_pred: np.ndarray) -> pd.DataFrame:
    """One row per digit: precision, recall, F1 and support (the number of test images of it)."""
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=DIGITS, zero_division=0)
    table = pd.DataFrame({"digit": DIGITS, "precision": precision, "recall": recall, "f1": f1})
    return table.round(DECIMALS).assign(support=support.astype(int))


def headline_names(scores: dict[str, float]) -> dict[str, float]:
    """MLflow names of the headline: test_accuracy, test_log_loss, test_macro_precision, …"""
    return {
        f"test_{name}" if name in ("accuracy", "log_loss") else f"test_macro_{name}": value
        for name, value in scores.items()
    }


def per_class_names(classes: pd.DataFrame) -> dict[str, float]:
    """MLflow names of the per-class scores: precision_3, recall_3, f1_3, …"""
    return {
        f"{score}_{row.digit}": float(getattr(row, score))
        for row in classes.itertuples()
        for score in ("precision", "recall", "f1")
    }


def write_reports(
    out_dir: Path,
    model: str,
    images: np.ndarray,
    y_true: np.ndarray,
    probabilities: np.ndarray,
    scores: dict[str, float],
    classes: pd.DataFrame,
) -> None:
    """Everything the evaluate stage declares, written together or not at all:

    metrics.json (headline, keyed by model so `dvc exp show` names the columns mlp.accuracy, …),
    per_class.csv (chart), predictions.csv (DVC confusion plot), confusion_matrix.{csv,png},
    classification_report.txt and misclassified.png (the test digits the model gets wrong).
    """
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, labels=DIGITS)
    with atomic_dir(out_dir) as tmp:
        files = EvalReports(tmp)
        files.metrics.write_text(json.dumps({model: scores}, indent=2) + "\n")
        classes.to_csv(files.per_class, index=False)
        pd.DataFrame({"actual": y_true, "predicted": y_pred}).to_csv(files.predictions, index=False)
        pd.DataFrame(matrix, index=pd.Index(DIGITS, name="actual"), columns=DIGITS).to_csv(files.confusion_csv)
        report = classification_report(y_true, y_pred, labels=DIGITS, digits=DECIMALS, zero_division=0)
        files.classification_report.write_text(report)
        plot_confusion(
            matrix, files.confusion_png, f"{model}: confusion matrix, test set (accuracy {scores['accuracy']:.4f})"
        )
        plot_misclassified(images, y_true, probabilities, files.misclassified, model)
