"""The train stage in-process on tiny made-up digits: `fit` on arrays, and `train` itself from a
processed folder into a real SQLite store."""

import logging
import re
from typing import get_args

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mnist_pipeline.core.params import Augmentation, DataParams, MLPParams, Params
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.tracking.run_file import read_model_id, read_run_id
from mnist_pipeline.tracking.runs import training_params
from mnist_pipeline.training.fit_loop import fit
from mnist_pipeline.training.models import build
from mnist_pipeline.training.trainer import train
from tests.support.harness import shipped_params
from tests.support.tiny import digits, store_uri, tiny_layout, tiny_params

KEPT_LINE = re.compile(r"kept the weights of epoch (\d+) \(([^)]*)\)")


def val_losses(client: MlflowClient, run_id: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, "val_loss"), key=lambda m: m.step)]


def test_train_writes_the_model_its_run_file_and_history_and_the_run_holds_its_params(tmp_path, clean_env):

    layout = tiny_layout(tmp_path)
    params = tiny_params(epochs=2, precision="float32")  # the fit's val_loss in the saved model's arithmetic
    run_id = train("mlp", params, layout)

    assert read_run_id(layout.model_dir("mlp")) == run_id
    model_id = read_model_id(layout.model_dir("mlp"))
    assert model_id, "train recorded the logged model's id"
    history = pd.read_csv(layout.history("mlp"))
    assert history["epoch"].tolist() == [1, 2]
    client = MlflowClient(store_uri(layout))  # the store at the layout's root: nothing chose another
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["model"] == "mlp"
    assert run.data.tags["compute_dtype"] == "float32"  # what its `precision` chose, for comparing runs
    # The model's params and the data's, as the user wrote them in params.yaml.
    expected = {"model"} | set(MLPParams.model_fields) | {f"data.{key}" for key in DataParams.model_fields}
    expected = expected - {"augmentation"} | {f"augmentation.{key}" for key in Augmentation.model_fields}
    assert set(run.data.params) == expected
    assert run.data.params["hidden_units"] == "[32]" and run.data.params["epochs"] == "2"
    assert run.data.params["data.train_size"] == "60" and run.data.params["model"] == "mlp"
    assert val_losses(client, run_id) == pytest.approx(history["val_loss"].tolist())
    assert client.get_logged_model(model_id).name == "mlp"
    # Without early stopping the saved model holds the last epoch's weights.
    assert saved_val_loss(layout) == pytest.approx(history["val_loss"].iloc[-1], rel=1e-5)


def saved_val_loss(layout) -> float:
    """The validation loss of the saved model, which is saved without its training setup."""
    import keras

    model = keras.models.load_model(layout.model_file("mlp"))
    model.compile(loss="sparse_categorical_crossentropy")
    return model.evaluate(*load_split(layout.processed, "validation"), verbose=0)


def test_both_models_runs_hold_the_same_params_the_logistic_as_an_mlp_without_hidden_layers():
    """MLflow's compare view draws a param a run lacks as "unknown": the logistic run logs the MLP's
    architecture params with the values that describe it, so the two runs line up key by key."""
    params = Params.model_validate(shipped_params())
    logistic, mlp = training_params("logistic", params), training_params("mlp", params)
    assert set(logistic) == set(mlp)
    assert {key: logistic[key] for key in ("hidden_units", "activation", "dropout")} == {
        "hidden_units": [],
        "activation": "none",
        "dropout": 0.0,
    }
    assert mlp["hidden_units"] == shipped_params()["models"]["mlp"]["hidden_units"]  # its own, from params.yaml


def test_an_augmented_run_logs_each_key_compare_shows_it_and_the_saved_model_is_the_plain_one(tmp_path, clean_env):
    """Augmentation's keys are params of their own (augmentation.enabled), so `compare` puts the one
    a sweep changed first; the saved model holds no random layer and the fitted weights: its
    validation loss is the fit's last."""
    import keras

    from mnist_pipeline.tools.compare import differing_params

    layout = tiny_layout(tmp_path)
    plain = train("mlp", tiny_params(epochs=1, precision="float32", augmentation={"enabled": False}), layout)
    augmented = train("mlp", tiny_params(epochs=1, precision="float32", augmentation={"enabled": True}), layout)

    client = MlflowClient(store_uri(layout))
    runs = [client.get_run(run_id) for run_id in (plain, augmented)]
    assert [run.data.params["augmentation.enabled"] for run in runs] == ["False", "True"]
    assert runs[1].data.params["augmentation.rotation"] == "10.0" and "augmentation" not in runs[1].data.params
    assert differing_params(runs) == ["augmentation.enabled"]
    saved = keras.models.load_model(layout.model_file("mlp"))
    assert [layer.name for layer in saved.layers] == ["pixels", "rescale", "flatten", "hidden_1", "dropout_1", "digit"]
    assert saved_val_loss(layout) == pytest.approx(pd.read_csv(layout.history("mlp"))["val_loss"].iloc[-1], rel=1e-5)


def test_early_stopping_keeps_the_best_epoch_and_best_epoch_names_it(tmp_path, clean_env, caplog):
    """Tiny data that the model soon overfits: validation loss turns up and training stops early.
    best_epoch (metric and log line) is the epoch of the lowest val_loss, and the saved model holds
    that epoch's weights, not the last's."""

    layout = tiny_layout(tmp_path)
    params = tiny_params(
        hidden_units=[256], dropout=0.0, batch_size=10, epochs=20, early_stopping_patience=2, precision="float32"
    )
    with caplog.at_level(logging.INFO, logger="mnist_pipeline.training.trainer"):
        run_id = train("mlp", params, layout)

    client = MlflowClient(store_uri(layout))
    losses = val_losses(client, run_id)
    best = int(np.argmin(losses)) + 1
    assert len(losses) < params.model("mlp").epochs, "it did not stop early: this test proves nothing"
    metrics = client.get_run(run_id).data.metrics
    assert metrics["best_epoch"] == best and metrics["epochs_trained"] == len(losses)
    assert metrics["best_val_loss"] == pytest.approx(min(losses))
    kept = KEPT_LINE.search(caplog.text)
    assert kept and (int(kept[1]), kept[2]) == (best, "lowest val_loss, restored by early stopping"), caplog.text
    val_loss = saved_val_loss(layout)
    assert val_loss == pytest.approx(min(losses), rel=1e-5) and val_loss != pytest.approx(losses[-1], rel=1e-5)


@pytest.mark.parametrize("optimizer", get_args(MLPParams.model_fields["optimizer"].annotation))
def test_each_optimizer_builds_and_fits_a_step(optimizer):
    params = MLPParams(
        type="mlp",
        hidden_units=[8],
        activation="relu",
        dropout=0.0,
        optimizer=optimizer,
        learning_rate=0.01,
        lr_schedule="cosine",
        epochs=1,
        batch_size=20,
        early_stopping_patience=0,
        seed=0,
    )
    model = build(params, steps_per_epoch=1)
    before = [w.copy() for w in model.get_weights()]
    fitted = fit(model, params, digits(20, 1), digits(20, 2))
    assert type(model.optimizer).__name__.lower() == optimizer
    assert int(model.optimizer.iterations) == 1
    assert fitted.curves["epoch"].tolist() == [1] and np.isfinite(fitted.curves["val_loss"]).all()
    assert fitted.kept_epoch == 1 and fitted.why == "the last"
    assert all(not np.array_equal(b, a) for b, a in zip(before, model.get_weights(), strict=True))
