"""Loading a saved Keras model file: one line naming the file and the fix when it is damaged.

Shared by the evaluate stage and `predict`; imports Keras only when called."""

import zipfile
from pathlib import Path

from mnist_pipeline.core.errors import PipelineError, first_line


def restore_fix(model_dir: Path) -> str:
    """The fix for a damaged file of a pipeline model, models/<name>/: DVC's copy, or a new training."""
    out = f"{model_dir.parent.name}/{model_dir.name}"
    return f"restore it with `dvc checkout {out}` or retrain it with `dvc repro -f train@{model_dir.name}`"


def load_keras(path: Path, fix: str):
    """keras.models.load_model(path); a file Keras cannot load raises PipelineError naming `fix`."""
    import keras

    if not zipfile.is_zipfile(path):  # Keras says "File not found" for a file that is there
        raise PipelineError(
            f"{path}: not a Keras model file (a .keras file is a zip archive; this one is damaged or cut short); {fix}"
        )
    try:
        return keras.models.load_model(path)
    except Exception as exc:  # noqa: BLE001 - a damaged archive surfaces as KeyError, OSError, JSON or config errors, …
        raise PipelineError(f"{path}: Keras cannot load it ({type(exc).__name__}: {first_line(exc)}); {fix}") from None
