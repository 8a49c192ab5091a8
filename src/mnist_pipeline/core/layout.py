"""Where each stage reads and writes, relative to the repository root: the one place that names
the files of models and reports. dvc.yaml declares the same paths (tests/unit/test_layout.py checks it)."""

from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "model.keras"  # in models/<model>/, beside the MLflow run file
RUN_FILE = "mlflow_run.json"  # in models/<model>/: the ids of the run that trained the model and of its logged model
DATA_SUMMARY_FILE = "summary.json"  # in reports/data/: split sizes
CLASS_COUNTS_FILE = "class_counts.csv"  # in reports/data/: images per digit and split (a DVC plot)


@dataclass(frozen=True)
class EvalReports:
    """The evaluate stage's files for one model in `folder`: reports/eval/<model>/, or the temporary
    folder they are written into before it takes that place."""

    folder: Path

    @property
    def metrics(self) -> Path:
        """The headline scores, keyed by model; summarize gathers every model's into one file."""
        return self.folder / "metrics.json"

    @property
    def per_class(self) -> Path:
        return self.folder / "per_class.csv"

    @property
    def predictions(self) -> Path:
        """Actual and predicted digit per test image: DVC's confusion plot."""
        return self.folder / "predictions.csv"

    @property
    def confusion_csv(self) -> Path:
        return self.folder / "confusion_matrix.csv"

    @property
    def confusion_png(self) -> Path:
        return self.folder / "confusion_matrix.png"

    @property
    def classification_report(self) -> Path:
        return self.folder / "classification_report.txt"

    @property
    def misclassified(self) -> Path:
        return self.folder / "misclassified.png"

    @property
    def all(self) -> tuple[Path, ...]:
        return (
            self.metrics,
            self.per_class,
            self.predictions,
            self.confusion_csv,
            self.confusion_png,
            self.classification_report,
            self.misclassified,
        )


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

    @property
    def data_summary(self) -> Path:
        return self.data_reports / DATA_SUMMARY_FILE

    @property
    def class_counts(self) -> Path:
        return self.data_reports / CLASS_COUNTS_FILE

    def model_dir(self, model: str) -> Path:
        """The saved model and the id of the MLflow run that trained it."""
        return self.root / "models" / model

    def model_file(self, model: str) -> Path:
        return self.model_dir(model) / MODEL_FILE

    def run_file(self, model: str) -> Path:
        return self.model_dir(model) / RUN_FILE

    def history(self, model: str) -> Path:
        return self.root / "reports" / "history" / f"{model}.csv"

    @property
    def metrics(self) -> Path:
        """Every model's headline test scores, the one metrics file DVC declares."""
        return self.root / "reports" / "metrics.json"

    def eval_dir(self, model: str) -> Path:
        return self.root / "reports" / "eval" / model

    def eval_reports(self, model: str) -> EvalReports:
        return EvalReports(self.eval_dir(model))
