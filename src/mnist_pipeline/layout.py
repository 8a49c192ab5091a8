"""Where each stage reads and writes, relative to the repository root; dvc.yaml names the same paths."""

from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "model.keras"  # in models/<model>/, beside the MLflow run file


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def params_ok(self) -> Path:
        return self.root / "reports" / "params_ok.txt"

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def processed(self) -> Path:
        return self.root / "data" / "processed"

    @property
    def data_reports(self) -> Path:
        return self.root / "reports" / "data"

    def model_dir(self, model: str) -> Path:
        """The saved model and the id of the MLflow run that trained it."""
        return self.root / "models" / model

    def history(self, model: str) -> Path:
        return self.root / "reports" / "history" / f"{model}.csv"

    @property
    def metrics(self) -> Path:
        """Every model's headline test scores, the one metrics file DVC declares."""
        return self.root / "reports" / "metrics.json"

    def eval_dir(self, model: str) -> Path:
        return self.root / "reports" / "eval" / model
