"""Augmentation (models.<name>.augmentation): random layers in the model Keras trains, never in the
model that is saved, logged and served; the same seed, the same fit."""

import numpy as np
import pytest

pytest.importorskip("keras")

import keras

from mnist_pipeline.core.params import Augmentation, MLPParams
from mnist_pipeline.training.augmentation import augmentation
from mnist_pipeline.training.fit_loop import seed_everything
from mnist_pipeline.training.models import architecture, build, for_inference

ALL: dict = {"shift": 0.1, "rotation": 10, "zoom": 0.1, "stroke": 1}


def mlp(seed: int = 0, **augment) -> MLPParams:
    return MLPParams(
        type="mlp",
        hidden_units=[16],
        activation="relu",
        dropout=0.2,
        optimizer="adam",
        learning_rate=0.001,
        lr_schedule="constant",
        epochs=1,
        batch_size=32,
        early_stopping_patience=0,
        seed=seed,
        augmentation=only(augment) if augment else Augmentation(),
    )


def digits(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A cross of ink in the middle of dark paper, moved a little per image, and random labels."""
    rng = np.random.default_rng(0)
    x = np.zeros((n, 28, 28), np.uint8)
    for i, (dy, dx) in enumerate(rng.integers(-3, 4, (n, 2))):
        x[i, 8 + dy : 20 + dy, 13 + dx : 15 + dx] = 255
        x[i, 13 + dy : 15 + dy, 8 + dx : 20 + dx] = 255
    return x, rng.integers(0, 10, n)


def fitted(params: MLPParams) -> keras.Model:
    seed_everything(params.seed)
    model = build(params, steps_per_epoch=8)
    model.fit(*digits(), epochs=1, batch_size=32, verbose=0)
    return model


def layer_types(model: keras.Model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def test_the_training_model_holds_the_random_layers_and_the_inference_model_does_not(tmp_path):
    params = mlp(**ALL)
    model = fitted(params)
    assert [layer.name for layer in model.get_layer("augment").layers] == ["to_image", "stroke", "affine", "to_pixels"]

    # The model saved, logged and served: the architecture of a model without augmentation, with
    # every fitted weight in its place, and a file that loads with no custom objects.
    inference = for_inference(model, params)
    plain = architecture(mlp())  # as saved, without augmentation (a model to train drops out with our own layer)
    assert (
        layer_types(inference)
        == layer_types(plain)
        == ["InputLayer", "Rescaling", "Flatten", "Dense", "Dropout", "Dense"]
    )
    for layer in inference.layers:
        mine, trained = layer.get_weights(), model.get_layer(layer.name).get_weights()
        assert len(mine) == len(trained) and all(np.array_equal(a, b) for a, b in zip(mine, trained, strict=True))
    inference.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert layer_types(loaded) == layer_types(plain)
    x, _ = digits(64)
    # Outside fit the training model's random layers pass images through: the two models agree
    # (up to the training model's bfloat16 arithmetic where the CPU has it).
    assert np.allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.05)


def only(setting: dict) -> Augmentation:
    """Augmentation enabled with `setting`'s amounts and every other amount 0."""
    return Augmentation(**({"enabled": True, "shift": 0, "rotation": 0, "zoom": 0, "stroke": 0} | setting))


def test_off_adds_no_layer():
    assert augmentation(Augmentation(), seed=0) is None  # the defaults: amounts, but not enabled
    assert augmentation(Augmentation(enabled=False, rotation=30), seed=0) is None
    assert layer_types(build(mlp(), steps_per_epoch=8)) == layer_types(build(mlp(shift=0.0), steps_per_epoch=8))


@pytest.mark.parametrize("setting", [{"shift": 0.1}, {"rotation": 10}, {"zoom": 0.1}, {"stroke": 1}, ALL])
def test_each_layer_changes_a_batch_in_training_and_passes_it_through_otherwise(setting):
    augment = augmentation(only(setting), seed=0)
    assert augment is not None
    images = digits(64)[0].astype("float32") / 255
    trained = np.asarray(augment(images, training=True))
    assert trained.shape == images.shape and not np.allclose(trained, images)
    assert np.array_equal(np.asarray(augment(images, training=False)), images)


def test_stroke_thickens_some_images_and_thins_others():
    augment = augmentation(only({"stroke": 1}), seed=0)
    assert augment is not None
    images = digits(64)[0].astype("float32") / 255
    ink, changed = images.sum(axis=(1, 2)), np.asarray(augment(images, training=True)).sum(axis=(1, 2))
    assert (changed > ink).any() and (changed < ink).any() and (changed == ink).any()


def test_augmented_training_is_the_same_for_the_same_seed():
    first, again = fitted(mlp(7, **ALL)).get_weights(), fitted(mlp(7, **ALL)).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # and the augmentation is in the fit: without it, or with another seed, other weights
    assert not np.array_equal(fitted(mlp(7)).get_weights()[0], first[0])
    assert not np.array_equal(fitted(mlp(8, **ALL)).get_weights()[0], first[0])


def centre_of_ink(images: np.ndarray) -> np.ndarray:
    """(row, column) of each image's centre of mass."""
    grid = np.indices((28, 28))
    return np.stack([(images * g).sum(axis=(1, 2)) / images.sum(axis=(1, 2)) for g in grid], axis=1)


@pytest.mark.parametrize(
    ("setting", "moved_at_most"),
    [({"rotation": 30}, 0.3), ({"zoom": 0.3}, 0.3), ({"shift": 0.1}, 2.8 * 2**0.5 + 0.3)],
)
def test_rotation_and_zoom_keep_the_digit_where_it_is_and_shift_moves_it_no_further_than_asked(setting, moved_at_most):
    """The affine transform turns and scales about the image's centre: a digit in the middle stays
    there; a shift of 0.1 moves it up to 2.8 pixels on each axis."""
    augment = augmentation(only(setting), seed=0)
    assert augment is not None
    images = np.zeros((64, 28, 28), np.float32)
    images[:, 8:20, 13:15] = images[:, 13:15, 8:20] = 1.0  # a cross centred on the image's centre
    moved = np.linalg.norm(centre_of_ink(np.asarray(augment(images, training=True))) - 13.5, axis=1)
    assert moved.max() <= moved_at_most
    assert not np.allclose(np.asarray(augment(images, training=True)), images)


def test_the_compiled_affine_resampling_reads_the_pixels_tensorflows_kernel_does():
    """augmentation.resample replaced keras.ops.image.affine_transform (TensorFlow's
    ImageProjectiveTransformV3) for speed: the same bilinear pixels, 0 outside, for turns, scales
    and shifts far beyond the params' ranges (a pixel read from outside the image included)."""
    from keras import ops

    from mnist_pipeline.training.augmentation import resample

    rng = np.random.default_rng(0)
    images = rng.random((64, 28, 28, 1)).astype(np.float32)
    angle, scale = rng.uniform(-0.8, 0.8, 64), rng.uniform(0.6, 1.5, 64)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    shift = rng.uniform(-12, 12, (2, 64))
    transform = np.stack([cos, sin, shift[0], -sin, cos, shift[1]], axis=1).astype(np.float32)
    ours = np.asarray(resample(images, transform))
    eight = np.concatenate([transform, np.zeros((64, 2), np.float32)], axis=1)
    kernel = np.asarray(ops.image.affine_transform(images, eight, fill_mode="constant", fill_value=0))
    assert (kernel == 0).mean() > 0.1  # some pixels were read from outside the image
    np.testing.assert_allclose(ours, kernel, atol=1e-5)
