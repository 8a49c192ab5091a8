"""Every version the pipeline registered carries its model card, read back from the real registry
of a repository where `dvc repro` ran: MLflow's description and the run's model_card.md."""

import csv
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.data.idx import SHA256
from mnist_pipeline.tracking.run_file import read_run_id
from tests.support.harness import store_uri


def card_of(client: MlflowClient, name: str, version: str) -> str:
    card = client.get_model_version(name, version).description
    assert card, f"{name} version {version} has no description"
    return card


def test_every_registered_version_carries_a_card_naming_the_data_and_every_digits_recall(trained_repo, tmp_path):
    client = MlflowClient(store_uri(trained_repo))
    lock = yaml.safe_load((trained_repo / "dvc.lock").read_text())["stages"]
    outs = {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}
    checked = 0
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
        # The version of the model now in models/ (other tests may have trained more): its card holds
        # every digit's scores as the stage wrote them, and DVC's md5 of its inputs as dvc.lock has them.
        current = [v for v in versions if v.run_id == read_run_id(Layout(trained_repo).model_dir(model))]
        if not current:
            continue
        card = card_of(client, name, current[0].version)
        with open(Layout(trained_repo).eval_reports(model).per_class, newline="") as f:
            for row in csv.DictReader(f):
                assert f"| {row['digit']} | {float(row['precision']):.4f} | {float(row['recall']):.4f} |" in card
        for path in ("data/processed", f"models/{model}"):
            assert f"`{path}` `{outs[path]}`" in card
        assert "Split seed 42: 400 training, 100 validation, 10,000 test images" in card
        checked += 1
    assert checked, "neither model in models/ is a registered version"
