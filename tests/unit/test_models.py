import os
import signal
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np
import pytest

pytest.importorskip("keras")

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

from mnist_pipeline.core.params import LogisticParams, MLPParams  # noqa: E402
from mnist_pipeline.training.models import BytewiseDropout, build, compute_dtype, for_inference  # noqa: E402


class Training(TypedDict):
    """The training fields these tests give every model, typed as the params classes take them."""

    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"]
    learning_rate: float
    lr_schedule: Literal["constant", "cosine"]
    epochs: int
    batch_size: int
    early_stopping_patience: int
    seed: int


TRAINING: Training = {
    "optimizer": "adam",
    "learning_rate": 0.001,
    "lr_schedule": "constant",
    "epochs": 1,
    "batch_size": 32,
    "early_stopping_patience": 0,
    "seed": 0,
}


def test_logistic_is_one_dense_softmax_layer_on_raw_pixels():
    model = build(LogisticParams(type="logistic", l2=0.01, **TRAINING), steps_per_epoch=10)
    assert model.input.dtype == "uint8" and tuple(model.input.shape) == (None, 28, 28)
    assert tuple(model.output.shape) == (None, 10)
    assert model.count_params() == 784 * 10 + 10
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Rescaling", "Flatten", "Dense"]


def test_mlp_follows_its_params():
    model = build(
        MLPParams(type="mlp", hidden_units=[32, 16], activation="gelu", dropout=0.25, **TRAINING), steps_per_epoch=10
    )
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [32, 16, 10]
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.25, 0.25]
    assert model.count_params() == (784 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_the_training_dropout_drops_the_rate_and_keeps_the_mean_and_the_saved_model_has_keras_own(tmp_path, rate):
    """BytewiseDropout draws a quarter of the random numbers Keras's Dropout does: in training it drops
    the rate (rounded to a 256th) of the units and scales the rest so the mean stays; outside training
    it passes its input through; the same seed drops the same units. The saved model holds Keras's
    own Dropout, so it loads with no class of ours."""
    ones = np.ones((512, 300), np.float32)  # 300 units: not a multiple of the four bytes per word
    dropped = np.asarray(BytewiseDropout(rate, seed=3)(ones, training=True))
    assert set(np.unique(dropped)) == {0.0, np.float32(256 / (256 - round(rate * 256)))}
    assert abs((dropped == 0).mean() - round(rate * 256) / 256) < 0.01 and abs(dropped.mean() - 1) < 0.02
    assert np.array_equal(dropped, np.asarray(BytewiseDropout(rate, seed=3)(ones, training=True)))
    assert not np.array_equal(dropped, np.asarray(BytewiseDropout(rate, seed=4)(ones, training=True)))
    assert np.array_equal(np.asarray(BytewiseDropout(rate, seed=3)(ones, training=False)), ones)

    params = MLPParams(type="mlp", hidden_units=[16], activation="relu", dropout=rate, **TRAINING)
    model = build(params, steps_per_epoch=1)
    assert [type(layer) for layer in model.layers if "dropout" in layer.name] == [BytewiseDropout]
    for_inference(model, params).save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert [type(layer) for layer in loaded.layers if "dropout" in layer.name] == [keras.layers.Dropout]


def test_rescaling_lives_in_the_model():
    model = build(
        MLPParams(type="mlp", hidden_units=[8], activation="relu", dropout=0.0, **TRAINING), steps_per_epoch=10
    )
    pixels = np.full((2, 28, 28), 255, dtype=np.uint8)
    probs = model.predict(pixels, verbose=0)
    assert probs.shape == (2, 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert model.get_layer("rescale")(pixels).numpy().max() == pytest.approx(1.0)


def test_auto_precision_is_bfloat16_only_for_an_mlp_on_a_cpu_that_has_it_natively():
    """docs/parameters.md (`models.<name>.precision`): `auto` is bfloat16 for an mlp on a CPU with
    AVX512_BF16 or AMX (and no GPU), else float32; a logistic model stays float32."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = (
        set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
        if cpuinfo.exists()
        else set()
    )
    native = bool(flags & {"avx512_bf16", "amx_bf16"}) and not tf.config.list_physical_devices("GPU")
    mlp = MLPParams(type="mlp", hidden_units=[16], activation="relu", dropout=0.0, **TRAINING)
    assert compute_dtype(mlp) == ("mixed_bfloat16" if native else "float32")
    assert compute_dtype(LogisticParams(type="logistic", **TRAINING)) == "float32"


def test_precision_sets_the_fits_arithmetic_and_the_saved_model_is_float32_with_the_same_weights(tmp_path):
    """The file evaluation and serving load: float32 and the fitted weights, whatever the fit computed in."""
    params = MLPParams(type="mlp", hidden_units=[16], activation="relu", dropout=0.0, **TRAINING)
    assert compute_dtype(params.model_copy(update={"precision": "float32"})) == "float32"
    mixed = params.model_copy(update={"precision": "bfloat16"})
    assert compute_dtype(mixed) == "mixed_bfloat16"
    model = build(mixed, steps_per_epoch=1, dtype=compute_dtype(mixed))
    assert model.get_layer("hidden_1").compute_dtype == "bfloat16"
    assert model.get_layer("digit").compute_dtype == "float32"  # probabilities and loss in float32
    model.fit(np.zeros((32, 28, 28), np.uint8), np.zeros(32, int), epochs=1, verbose=0)

    twin = for_inference(model, mixed)
    assert {layer.compute_dtype for layer in twin.layers if layer.name != "pixels"} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), twin.get_weights(), strict=True))
    twin.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert {layer.compute_dtype for layer in loaded.layers if layer.name != "pixels"} == {"float32"}
    pixels = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    # The same function, computed in float32 rather than bfloat16: close, not equal.
    assert np.allclose(model.predict(pixels, verbose=0), loaded.predict(pixels, verbose=0), atol=0.05)
    assert not loaded.compiled  # no optimizer state in the file: nothing after training reads it


def test_cosine_schedule_decays_to_zero_over_all_epochs():
    params = LogisticParams(type="logistic", **(TRAINING | {"lr_schedule": "cosine", "epochs": 3}))
    optimizer = build(params, steps_per_epoch=10).optimizer
    for step, expected in ((0, 0.001), (15, 0.0005), (30, 0.0)):
        optimizer.iterations.assign(step)
        assert float(optimizer.learning_rate) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    # 2 of 4 epochs (20 of 40 steps) rising from 0, then down to 0 along the cosine, or level.
    [
        ("cosine", ((0, 0.0), (10, 0.0005), (20, 0.001), (30, 0.0005), (40, 0.0))),
        ("constant", ((10, 0.0005), (20, 0.001), (40, 0.001))),
    ],
)
def test_warmup_rises_linearly_then_follows_the_schedule(schedule, expected):
    params = LogisticParams(type="logistic", **(TRAINING | {"epochs": 4})).model_copy(
        update={"lr_schedule": schedule, "warmup_epochs": 2}
    )
    optimizer = build(params, steps_per_epoch=10).optimizer
    for step, rate in expected:
        optimizer.iterations.assign(step)
        assert float(optimizer.learning_rate) == pytest.approx(rate, abs=1e-7)


def test_warmup_takes_at_most_half_the_epochs_so_a_one_epoch_run_has_none():
    params = LogisticParams(type="logistic", **(TRAINING | {"lr_schedule": "cosine", "epochs": 1}))
    optimizer = build(params.model_copy(update={"warmup_epochs": 3}), steps_per_epoch=10).optimizer
    assert float(optimizer.learning_rate) == pytest.approx(0.001)  # the full rate at the first step


def fit_weights(seed: int, images: int = 128, units: int = 16) -> list[np.ndarray]:
    from mnist_pipeline.training.fit_loop import seed_everything

    seed_everything(seed)
    params = MLPParams(type="mlp", hidden_units=[units], activation="relu", dropout=0.2, **TRAINING)
    model = build(params, steps_per_epoch=images // 32)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (images, 28, 28), dtype=np.uint8), rng.integers(0, 10, images)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model.get_weights()


def test_the_seed_decides_the_weights():
    first, again, other = fit_weights(7), fit_weights(7), fit_weights(8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.allclose(first[0], other[0])


class SignalAt(keras.callbacks.Callback):
    """Sends this process `signum` at the end of training batch `batch` (each signal in the list once).
    Keras reports batch ends once per models.STEPS_PER_EXECUTION batches: 15, 31, 47, …"""

    def __init__(self, batch: int, signals: list[int]):
        super().__init__()
        self.batch, self.signals = batch, signals
        self.ended_batches: list[int] = []

    def on_train_batch_end(self, batch, logs=None):
        self.ended_batches.append(batch)
        if batch == self.batch:
            for signum in self.signals:
                os.kill(os.getpid(), signum)


def fit_until_signal(signals: list[int]):
    from mnist_pipeline.training.fit_loop import StopOnSignal

    stop, sender = StopOnSignal(), SignalAt(31, signals)
    model = build(LogisticParams(type="logistic", l2=0.0, **TRAINING), steps_per_epoch=64)
    x, y = np.zeros((2048, 28, 28), dtype=np.uint8), np.zeros(2048, dtype=int)
    handlers = {s: signal.getsignal(s) for s in StopOnSignal.SIGNALS}
    with pytest.raises(KeyboardInterrupt) as raised, stop:
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[sender, stop])
    assert {s: signal.getsignal(s) for s in StopOnSignal.SIGNALS} == handlers  # put back
    return raised, sender


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_fit_is_raised_at_the_next_batch_end_by_the_stop_callback(signum):
    from mnist_pipeline.core.errors import Terminated

    raised, sender = fit_until_signal([signum])
    assert isinstance(raised.value, Terminated) == (signum == signal.SIGTERM)
    assert raised.traceback[-1].name == "raise_if_caught"  # not wherever the signal landed
    assert sender.ended_batches == [15, 31]  # no batch ran after the signal


def test_a_second_signal_during_fit_is_raised_at_once():
    raised, sender = fit_until_signal([signal.SIGINT, signal.SIGINT])
    assert raised.traceback[-1].name == "defer"
    assert sender.ended_batches == [15, 31]
