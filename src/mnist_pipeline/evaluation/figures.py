"""The evaluate stage's pictures (PNG, for DVC plots and MLflow artifacts), drawn with matplotlib."""

from pathlib import Path

import numpy as np

SHOWN_MISTAKES = 40  # 4 rows of 10: enough to see a pattern, small enough to read each label


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and none on CI
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    ConfusionMatrixDisplay(matrix, display_labels=range(len(matrix))).plot(
        ax=ax, cmap="Blues", colorbar=True, values_format="d"
    )
    ax.set(title=title, xlabel="predicted digit", ylabel="true digit")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_misclassified(
    images: np.ndarray, y_true: np.ndarray, probabilities: np.ndarray, path: Path, model: str
) -> None:
    """The test digits the model gets wrong, most confident mistakes first: true label, prediction
    and the probability the model gave it."""
    plt = _pyplot()
    y_pred = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:SHOWN_MISTAKES]
    # One image of all the digits, not one axes each: the same picture in a tenth of the time.
    columns = 10
    rows = max(1, -(-len(shown) // columns))
    cell_w, cell_h, top = 36, 46, 14  # mosaic pixels per digit: 28 and a margin, room above for its label
    mosaic = np.zeros((rows * cell_h, columns * cell_w), dtype=np.uint8)
    fig, ax = plt.subplots(figsize=(columns * 1.1, rows * 1.35 + 0.6), dpi=100)
    for k, i in enumerate(shown):
        y, x = k // columns * cell_h + top, k % columns * cell_w + (cell_w - 28) // 2
        mosaic[y : y + 28, x : x + 28] = images[i]
        ax.text(x + 14, y - 3, f"{y_true[i]} → {y_pred[i]}  {confidence[i]:.2f}", fontsize=8, ha="center", va="bottom")
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    what = (f"the {len(shown)} most confident" if len(wrong) > len(shown) else "all") if len(wrong) else "none"
    fig.suptitle(
        f"{model}: {len(wrong):,} of {len(y_true):,} test digits misclassified ({what} shown)\n"
        "each: true → predicted, probability of the prediction",
        fontsize=10,
    )
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.65 / fig.get_figheight())
    fig.savefig(path)
    plt.close(fig)
