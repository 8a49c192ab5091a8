"""Where a model comes from, gathered for its model card: what its training run recorded (params,
git commit, machine, arithmetic, fit time, split sizes), the data's checksums, and DVC's hashes of
the evaluate stage's inputs, computed here as DVC computes them."""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.data import idx

CONFUSIONS = 5  # the worst true → predicted pairs a card lists
# An MLflow dataset's context (tracking/runs.py log_dataset) → the split's name on the card.
SPLITS = {"training": "training", "validation": "validation", "test": "test"}


@dataclass(frozen=True)
class Evidence:
    """What only the evaluation knows: the test set's size, its worst confusions, and DVC's md5 of its inputs."""

    test_images: int | None = None
    confusions: list[tuple[int, int, int]] = field(default_factory=list)
    inputs_md5: dict[str, str] = field(default_factory=dict)


def evidence(matrix: np.ndarray, inputs: dict[str, Path]) -> Evidence:
    """From the test set's confusion matrix (rows: true digit) and the stage's data inputs, named
    as dvc.yaml names them (data/processed, models/mlp)."""
    return Evidence(int(matrix.sum()), worst_confusions(matrix), {name: dvc_md5(path) for name, path in inputs.items()})


def worst_confusions(matrix: np.ndarray, n: int = CONFUSIONS) -> list[tuple[int, int, int]]:
    """The `n` most frequent mistakes as (true digit, predicted digit, images); of equals, the lower digits first."""
    mistakes = [(int(matrix[t, p]), t, p) for t in range(len(matrix)) for p in range(len(matrix)) if t != p]
    worst = sorted((m for m in mistakes if m[0]), key=lambda m: (-m[0], m[1], m[2]))[:n]
    return [(t, p, count) for count, t, p in worst]


def dvc_md5(path: Path) -> str:
    """The md5 `dvc.lock` records for `path`: a file's md5; for a folder, the md5 of the JSON list of
    its files' md5 and relative paths, sorted by path, with ".dir" (dvc_data's Tree.as_bytes and
    digest). Computed, not read from dvc.lock: under `dvc repro` the running stage's entry is not
    written yet, and the previous one may be another model's."""
    path = Path(path)
    if path.is_file():
        return _file_md5(path)
    entries = sorted(
        (
            {"md5": _file_md5(f), "relpath": f.relative_to(path).as_posix()}
            for f in path.rglob("*")
            if f.is_file() and "__pycache__" not in f.parts  # as the project's .dvcignore
        ),
        key=lambda entry: entry["relpath"],
    )
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def _file_md5(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "md5").hexdigest()


def training_record(client: MlflowClient, run_id: str) -> dict:
    """The card's fields that the training run recorded (Card's names); empty when the store lost the run."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return {}
    tags, metrics = run.data.tags, run.data.metrics
    split = {}
    for dataset in run.inputs.dataset_inputs if run.inputs else []:
        context = next((tag.value for tag in dataset.tags if tag.key == "mlflow.data.context"), None)
        try:
            rows = json.loads(dataset.dataset.profile or "{}")["targets_shape"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            continue
        if context in SPLITS:
            split[SPLITS[context]] = int(rows)
    try:
        experiment = client.get_experiment(run.info.experiment_id).name
    except MlflowException:
        experiment = None
    return {
        "run_name": run.info.run_name,
        "experiment": experiment,
        "params": dict(sorted(run.data.params.items())),
        "split": split,
        "data_sha256": dict(idx.SHA256),
        "git_commit": tags.get("git.commit"),
        "git_dirty": tags.get("git.dirty"),
        "host": tags.get("process.host"),
        "compute_dtype": tags.get("compute_dtype"),
        "fit_seconds": metrics.get("fit_seconds"),
        "epochs_trained": int(metrics["epochs_trained"]) if "epochs_trained" in metrics else None,
    }
