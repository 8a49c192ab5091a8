"""The logs people read: `dvc repro`, `predict` (the served model's log: tests/system/test_serving.py) carry
no TensorFlow start-up lines and no colour codes, keep Keras's line per epoch, and say true things."""

import sys

import numpy as np
import pytest

from mnist_pipeline.training.quiet_tf import start_up_noise
from tests.support.harness import REPO, TF_START_UP, repo_env, sh


def test_kept_epoch_is_the_one_whose_weights_the_model_holds():
    """A real fit where the last epoch is not the best: with early stopping the model holds the
    best epoch's weights, without it the last epoch's, and fit says which."""
    import keras

    from mnist_pipeline.core.params import MLPParams
    from mnist_pipeline.training.fit_loop import fit

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 2, 64)
    x_val, y_val = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 2, 64)  # noise: it overfits
    for patience in (0, 50):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, "relu"), keras.layers.Dense(2, "softmax")])
        model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
        # fit reads the epochs, the batch size and the patience; the model above is already built.
        params = MLPParams(
            type="mlp",
            hidden_units=[64],
            activation="relu",
            dropout=0.0,
            optimizer="adam",
            learning_rate=0.05,
            lr_schedule="constant",
            epochs=8,
            batch_size=32,
            early_stopping_patience=patience,
            seed=1,
        )
        curves, kept_epoch, _ = fit(model, params, (x, y), (x_val, y_val))
        assert curves["val_loss"].argmin() != len(curves) - 1  # else this proves nothing
        kept = curves.iloc[kept_epoch - 1]
        val_loss, val_accuracy = model.evaluate(x_val, y_val, verbose=0)
        assert kept["epoch"] == (curves["val_loss"].argmin() + 1 if patience else len(curves))
        assert val_loss == pytest.approx(kept["val_loss"], rel=1e-5)
        assert val_accuracy == pytest.approx(kept["val_accuracy"])


def test_tensorflow_prints_start_up_lines_that_tf_cpp_min_log_level_0_shows(tmp_path):
    """Without the filter TensorFlow prints its start-up lines, so the tests above can fail;
    TF_CPP_MIN_LOG_LEVEL=0 is the user's way to see them."""
    probe = "from mnist_pipeline.training.quiet_tf import import_tensorflow; import_tensorflow()"
    loud = sh(tmp_path, sys.executable, "-c", probe, env=repo_env(REPO, TF_CPP_MIN_LOG_LEVEL="0"))
    assert sum(text in loud.stderr for text in TF_START_UP) >= 3, loud.stderr


def test_the_filter_drops_start_up_info_and_keeps_warnings_and_errors():
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "I0000 00:00:1795477247.754250    8938 port.cc:153] oneDNN custom operations are on.\n",
        "I0000 00:00:1795477247.755572    8938 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
        "GPU will not be used.\n",
        "E0000 00:00:1795477031.577649    5993 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n",
        "W0000 00:00:1795477031.577649    5993 some_op.cc:12] a real warning\n",
        "E0000 00:00:1795477031.577649    5993 other.cc:7] a real error\n",
        "Traceback (most recent call last):\n",
    ]
    assert start_up_noise(lines) == [True, True, True, True, False, False, False]
    # With a CUDA driver present, a failing cuInit is a real error.
    assert start_up_noise([lines[3]]) == [False]
