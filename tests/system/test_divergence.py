"""A diverging fit (NaN or infinite loss) stops by the end of the graph call in which it appears (every
models.STEPS_PER_EXECUTION batches), with one line naming the model, the epoch, the batch, the likely cause
and the fix; the run ends FAILED and no model is written."""

import hashlib
import re

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mnist_pipeline.training.trainer import train
from tests.support.cli import run_main
from tests.support.harness import REPO, repo_env
from tests.support.tiny import store_uri, tiny_layout, tiny_params

# Plain SGD at the highest learning rate params.yaml allows: on the tiny digits the loss turns NaN in
# the second epoch (what `train mlp --optimizer sgd --learning_rate 10` does on MNIST, in seconds).
DIVERGING = [
    "--optimizer",
    "sgd",
    "--learning_rate",
    "10",
    "--activation",
    "elu",
    "--hidden_units",
    "[256, 256]",
    "--epochs",
    "5",
]

ONE_LINE = re.compile(
    r"error: mlp diverged at epoch (\d+)(?:, by batch (\d+))?: the (training|validation) loss is "
    r"(nan|inf|-inf); the learning rate \(10 with sgd\) is likely too high: lower "
    r"models\.mlp\.learning_rate and train again; no model was saved"
)


@pytest.mark.slow  # two trainings: 5-10 s
def test_a_diverging_train_stage_fails_in_one_line_and_keeps_the_previous_model(tmp_path, clean_env):
    layout = tiny_layout(tmp_path)
    params = tiny_params(epochs=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    good_run = train("mlp", params, layout)  # the previous training, which the failed one must leave whole
    before = {
        path: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in (*layout.model_dir("mlp").iterdir(), layout.history("mlp"))
    }

    # In this process (tests/support/cli.py), as the training above: the test reads what the command
    # prints, its exit code and the files and runs it leaves.
    done = run_main(["--params", str(tmp_path / "params.yaml"), "train", "mlp", *DIVERGING], tmp_path, repo_env(REPO))

    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    stopped = ONE_LINE.fullmatch(last)
    assert stopped, last
    epoch = int(stopped[1])
    assert 1 <= epoch < 5, "it did not stop at the first non-finite loss"
    # Stopped at that batch: the output shows no epoch after it.
    assert f"Epoch {epoch}/5" in done.stdout and f"Epoch {epoch + 1}/5" not in done.stdout, done.stdout
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in before} == before
    assert sorted(layout.model_dir("mlp").iterdir()) == sorted(p for p in before if p.parent == layout.model_dir("mlp"))
    assert not list(tmp_path.glob("models/.*")) and not list(tmp_path.glob("reports/history/.*")), "temporary files"

    client = MlflowClient(store_uri(layout))
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None, "tiny"
    [failed] = [run for run in client.search_runs([experiment.experiment_id]) if run.info.run_id != good_run]
    assert failed.info.status == "FAILED"
    # The epochs before the divergence were logged; nothing of the diverged one, and no model.
    assert [m.step for m in client.get_metric_history(failed.info.run_id, "loss")] == list(range(1, epoch))
    assert (
        client.search_logged_models(
            [failed.info.experiment_id], filter_string=f"source_run_id = '{failed.info.run_id}'"
        )
        == []
    )
