"""Every version the pipeline registered carries its model card, read back from the real registry
of a repository where `dvc repro` ran: MLflow's description and the run's model_card.md."""

import csv
import io
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from mnist_pipeline.data.idx import SHA256
from tests.support.harness import sh, store_uri


def card_of(client: MlflowClient, name: str, version: str) -> str:
    card = client.get_model_version(name, version).description
    assert card, f"{name} version {version} has no description"
    return card


def committed(repo: Path, path: str) -> str:
    """`path` as the trained repository committed it after its `dvc repro` (tests/conftest.py)."""
    return sh(repo, "git", "show", f"HEAD:{path}").stdout


def test_every_registered_version_carries_a_card_naming_the_data_and_every_digits_recall(trained_repo, tmp_path):
    client = MlflowClient(store_uri(trained_repo))
    lock = yaml.safe_load(committed(trained_repo, "dvc.lock"))["stages"]
    outs = {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}
    for model in ("logistic", "mlp"):
        name = f"mnist-{model}"
        versions = client.search_model_versions(f"name = '{name}'")
        assert versions
        for version in versions:
            card = card_of(client, name, version.version)
            assert card.startswith(f"# {name} version {version.version}\n"), card[:200]
            assert all(digest in card for digest in SHA256.values())
            assert len(card) <= 5000 and f"--model models:/{name}/{version.version}" in card
            folder = tmp_path / f"{name}-{version.version}"
            folder.mkdir()
            artifact = client.download_artifacts(str(version.run_id), "model_card.md", str(folder))
            assert Path(artifact).read_text() == card
        # Version 1, which the repository's `dvc repro` registered (other tests may register more): its
        # card holds every digit's scores and DVC's md5 of its inputs as that repro committed them.
        card = card_of(client, name, "1")
        per_class = committed(trained_repo, f"reports/eval/{model}/per_class.csv")
        for row in csv.DictReader(io.StringIO(per_class)):
            assert f"| {row['digit']} | {float(row['precision']):.4f} | {float(row['recall']):.4f} |" in card
        for path in ("data/processed", f"models/{model}"):
            assert f"`{path}` `{outs[path]}`" in card
        assert "Split seed 42: 400 training, 100 validation, 10,000 test images" in card
