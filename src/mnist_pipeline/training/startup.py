"""What a command that trains or evaluates does before TensorFlow loads, in this order: the tracking
store must answer (in seconds, before any training starts), a stage whose `dvc repro` was killed ends
too rather than train on as an orphan, and TensorFlow loads without its start-up chatter.

Imported once params.yaml has passed: MLflow, which the store check needs, loads in seconds."""

from pathlib import Path

from mnist_pipeline.tracking.processes import stop_with_dvc
from mnist_pipeline.tracking.store import check_store
from mnist_pipeline.training.quiet_tf import import_tensorflow


def start(root: Path, *, under_dvc: bool) -> None:
    """Ready to train or evaluate in the repository at `root`; `under_dvc`: a stage, which watches
    its `dvc` (tune's workers run on their own)."""
    check_store(root)
    if under_dvc:
        stop_with_dvc()
    import_tensorflow()
