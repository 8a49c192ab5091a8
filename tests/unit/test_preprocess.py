import numpy as np
import pytest

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import DataParams
from mnist_pipeline.data.splits import load_split, save_splits
from mnist_pipeline.data.validation_split import class_counts, split


def fake_raw(n_train=1000, n_test=100):
    rng = np.random.default_rng(0)
    return {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": np.arange(n_train, dtype=np.uint8) % 10,
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": np.arange(n_test, dtype=np.uint8) % 10,
    }


def test_split_is_stratified_sized_and_seeded():
    raw = fake_raw()
    splits = split(raw, DataParams(validation_size=100, train_size=300, seed=1))
    assert len(splits["train"][1]) == 300 and len(splits["validation"][1]) == 100
    assert np.bincount(splits["validation"][1]).tolist() == [10] * 10
    assert all(29 <= count <= 31 for count in np.bincount(splits["train"][1]))
    again = split(raw, DataParams(validation_size=100, train_size=300, seed=1))
    other = split(raw, DataParams(validation_size=100, train_size=300, seed=2))
    assert np.array_equal(again["train"][0], splits["train"][0])
    assert not np.array_equal(other["train"][0], splits["train"][0])


def test_test_set_is_untouched_and_train_and_validation_are_disjoint():
    raw = fake_raw()
    splits = split(raw, DataParams(validation_size=200, seed=0))
    assert splits["test"][0] is raw["test_x"]
    assert len(splits["train"][1]) == 800
    seen = {img.tobytes() for img in splits["train"][0]}
    assert not any(img.tobytes() in seen for img in splits["validation"][0])


def test_sizes_larger_than_the_data_are_refused():
    with pytest.raises(PipelineError, match="exceeds the 1000 training images"):
        split(fake_raw(), DataParams(validation_size=500, train_size=600, seed=0))


def test_class_counts_table():
    counts = class_counts(split(fake_raw(), DataParams(validation_size=100, seed=0)))
    assert list(counts.columns) == ["digit", "train", "validation", "test"]
    assert counts["train"].sum() == 900 and counts["test"].tolist() == [10] * 10


def test_saved_splits_are_uint8_and_load_without_pickle(tmp_path):
    splits = split(fake_raw(), DataParams(validation_size=100, seed=0))
    save_splits(splits, tmp_path / "processed")
    x, y = load_split(tmp_path / "processed", "validation")
    assert x.dtype == np.uint8 and x.shape == (100, 28, 28)
    assert np.array_equal(y, splits["validation"][1])
    with pytest.raises(PipelineError, match="run the preprocess stage first"):
        load_split(tmp_path / "nowhere", "train")
