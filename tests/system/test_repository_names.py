"""The real `train` command in a repository folder whose name is not a plain path in a URL: its run
goes into the folder's own mlflow.db, its model into the folder's mlruns/, within the time training
takes, and nothing is created beside the folder (docs/reliability.md, row 12)."""

import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.support.harness import REPO, repo_env
from tests.support.tiny import store_uri, tiny_layout, tiny_params


@pytest.mark.slow  # a train stage of its own for each: 10-20 s
@pytest.mark.parametrize("name", ["r%41", "rt_q?x=1", "a#b with spaces"])
def test_train_in_a_folder_with_an_unusual_name_keeps_its_store_inside_it(tmp_path, name):
    layout = tiny_layout(tmp_path / name)
    params = tiny_params(epochs=1)
    (layout.root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))

    # Before: `r%41` retried "unable to open database file" for a minute, then failed.
    done = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline", "train", "mlp"],
        cwd=layout.root,
        env=repo_env(REPO),
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == [layout.root], "something was created beside the repository"
    client = MlflowClient(store_uri(layout))
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None, "no experiment in the repository's own mlflow.db"
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    model_files = list((layout.root / "mlruns").rglob("MLmodel"))
    assert len(model_files) == 1, "the logged model is not in the repository's mlruns/"
