"""Fitting a built Keras model: the loop the train stage and every tuning trial share, and the
callbacks that make it safe to run unattended (divergence, signals) and visible (per-epoch metrics)."""

import math
import signal
import time
from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from mnist_pipeline.core.errors import PipelineError, interrupt
from mnist_pipeline.core.params import LogisticParams, MLPParams
from mnist_pipeline.training.metric_sender import MetricSender


class EpochMetrics(keras.callbacks.Callback):
    """Hands each epoch's losses and accuracies (step = epoch, from 1) to the sender, which logs them
    to MLflow from a thread of its own: a store that stops answering never holds up the fit."""

    def __init__(self, sender: MetricSender):
        super().__init__()
        self.sender = sender
        self.seconds = 0.0  # time the fit spent on logging, so the benchmark can price it against the fit

    def on_epoch_end(self, epoch, logs=None):
        started = time.perf_counter()
        self.sender.put(epoch + 1, logs or {})
        self.seconds += time.perf_counter() - started


class StopOnDivergence(keras.callbacks.Callback):
    """A NaN or infinite loss stops training with one line: nothing after it is worth the time, and
    a model of NaNs must never be saved, logged or evaluated. Keras reports to callbacks once per
    call into the compiled graph (models.STEPS_PER_EXECUTION batches), so it stops by the end of
    the call in which the loss went bad, and names that batch."""

    def __init__(self, name: str, params: LogisticParams | MLPParams):
        super().__init__()
        self.name, self.training, self.epoch = name, params, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        self.check("training loss", (logs or {}).get("loss"), f", by batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self.check("validation loss", (logs or {}).get("val_loss"), "")

    def check(self, what: str, loss, where: str) -> None:
        if loss is not None and not math.isfinite(loss):
            raise PipelineError(
                f"{self.name} diverged at epoch {self.epoch}{where}: the {what} is {loss}; the learning rate "
                f"({self.training.learning_rate:g} with {self.training.optimizer}) is likely too high: lower "
                f"models.{self.name}.learning_rate and train again; no model was saved"
            )


class StopOnSignal(keras.callbacks.Callback):
    """Ctrl-C or SIGTERM during fit is raised at the next batch end, in Keras's own Python loop.

    Raised wherever the signal lands, the KeyboardInterrupt can surface inside TensorFlow's C++
    while it calls back into Python; that cannot unwind, and the process aborts (SIGABRT) with
    its MLflow run left RUNNING. A second signal is raised at once, for a user who will not wait.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        super().__init__()
        self.caught = None

    def __enter__(self):
        self.previous = {signum: signal.signal(signum, self.defer) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if exc_info[0] is None:
            self.raise_if_caught()  # a signal in the last steps of fit, after the last batch

    def defer(self, signum, frame):
        if self.caught:
            raise interrupt(signum)
        self.caught = signum

    def raise_if_caught(self, *args, **kwargs):
        if self.caught:
            raise interrupt(self.caught)

    on_train_batch_end = on_test_batch_end = raise_if_caught


def seed_everything(seed: int) -> None:
    """Same params, same weights: seed Python, NumPy and TF (initialisation, shuffling, dropout).

    On a CPU that is enough: the dense kernels split their work by the size of the thread pool,
    the same on every run of one machine, and Keras feeds the batches in order. TF's op
    determinism there only slows the fit (bench/RESULTS.md); GPU kernels add in whatever order
    their threads finish, so on a GPU it is switched on.
    """
    keras.utils.set_random_seed(seed)
    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.enable_op_determinism()


class Fitted(NamedTuple):
    curves: pd.DataFrame  # one row per epoch trained (epoch from 1): loss, accuracy, val_loss, val_accuracy
    kept_epoch: int  # the epoch whose weights the model holds after fit
    why: str  # why that one: restored by early stopping, or the last


def fit(
    model: keras.Model,
    params: LogisticParams | MLPParams,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> Fitted:
    """Fit a built model on (images, labels) as `params` say: epochs, batch size, and early stopping
    on validation loss that keeps the best epoch's weights. No files and no MLflow here: the
    caller's `callbacks` log what it wants."""
    callbacks, early_stopping = list(callbacks), None
    if params.early_stopping_patience:
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=params.early_stopping_patience, restore_best_weights=True
        )
        callbacks.append(early_stopping)
    history = model.fit(
        *train,
        validation_data=validation,
        epochs=params.epochs,
        batch_size=params.batch_size,
        callbacks=callbacks,
        verbose=2,
    )
    curves = pd.DataFrame(history.history).rename_axis("epoch").reset_index()
    curves["epoch"] += 1
    return Fitted(curves, *kept_epoch(curves, early_stopping))


def kept_epoch(curves: pd.DataFrame, early_stopping: keras.callbacks.EarlyStopping | None) -> tuple[int, str]:
    """The epoch (from 1) whose weights the model holds after fit, and why.

    Keras's EarlyStopping restores its best epoch's weights at the end of fit whether it stopped
    early or not; without it the model keeps the last epoch's.
    """
    if early_stopping is not None and early_stopping.best_weights is not None:
        return int(curves["epoch"].iloc[early_stopping.best_epoch]), "lowest val_loss, restored by early stopping"
    return int(curves["epoch"].iloc[-1]), "the last"
