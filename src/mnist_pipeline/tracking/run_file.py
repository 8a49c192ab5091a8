"""models/<model>/mlflow_run.json: the run that trained the model, the model it logged, and the
sha256 of the model.keras it saved, so that evaluation logs into that run, and only for that file."""

import hashlib
import json
from pathlib import Path

from mnist_pipeline.core.atomic import write_text
from mnist_pipeline.core.errors import PipelineError, first_line
from mnist_pipeline.core.layout import RUN_FILE

# The digest of the model.keras a training run saved, as a tag of the run and in its run file: evaluation
# logs into the run, and the registry registers its model, only for that very file.
MODEL_DIGEST_TAG = "model.sha256"


def write_run_file(model_dir: Path, run_id: str, model_id: str | None = None, model_sha256: str | None = None) -> None:
    """The ids of the run that trained the model and of the model it logged (MLflow's `m-…`), and the
    sha256 of the model.keras it saved."""
    ids = {"run_id": run_id} | ({"model_id": model_id} if model_id else {})
    ids |= {"model_sha256": model_sha256} if model_sha256 else {}
    write_text(model_dir / RUN_FILE, json.dumps(ids) + "\n")


def read_run_id(model_dir: Path) -> str | None:
    return read_run_file(model_dir).get("run_id")


def read_model_id(model_dir: Path) -> str | None:
    """The logged model's id; None for a folder written before it was recorded."""
    return read_run_file(model_dir).get("model_id")


def read_model_sha256(model_dir: Path) -> str | None:
    """The sha256 of the model.keras training saved; None for a folder written before it was recorded."""
    return read_run_file(model_dir).get("model_sha256")


def file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def read_run_file(model_dir: Path) -> dict[str, str]:
    path = model_dir / RUN_FILE
    if not path.is_file():
        return {}
    try:
        ids = json.loads(path.read_text())  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        if not (isinstance(ids, dict) and all(isinstance(value, str) for value in ids.values())):
            raise ValueError("not an object of ids")
    except ValueError as exc:  # edited or damaged: DVC has the stage's copy, or training writes it again
        raise PipelineError(
            f"{path}: not the run file the train stage writes ({first_line(exc)}); restore it "
            f"with `dvc checkout {model_dir.parent.name}/{model_dir.name}` or retrain with "
            f"`dvc repro -f train@{model_dir.name}`"
        ) from None
    return ids
