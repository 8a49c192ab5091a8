"""bench/robustness.py's pieces that need no model: the sample it draws and the models it is given.
The runner end to end: tests/system/test_bench.py."""

import numpy as np
import pytest

from bench.robustness import augmentation_variants, named_models, stratified


def test_the_sample_holds_each_digit_equally_and_repeats():
    labels = np.random.default_rng(1).integers(0, 10, 5000)
    sample = stratified(labels, 205, seed=0)
    assert len(set(sample)) == 205 and np.all(np.diff(sample) > 0)
    assert sorted(np.bincount(labels[sample])) == [20] * 5 + [21] * 5
    assert np.array_equal(sample, stratified(labels, 205, seed=0))
    assert not np.array_equal(sample, stratified(labels, 205, seed=1))


def test_models_by_name_or_the_workspace_defaults(tmp_path):
    assert named_models([], tmp_path) == {
        "mlp": tmp_path / "models" / "mlp" / "model.keras",
        "logistic": tmp_path / "models" / "logistic" / "model.keras",
    }
    assert named_models(["mlp-aug=a/b.keras", "x=c.keras"], tmp_path) == {
        "mlp-aug": tmp_path.__class__("a/b.keras"),
        "x": tmp_path.__class__("c.keras"),
    }
    with pytest.raises(SystemExit, match=r"^bench: --model model.keras: expected NAME=PATH, e.g. mlp="):
        named_models(["model.keras"], tmp_path)


def test_variants_switch_augmentation_or_say_why_not():
    assert augmentation_variants({"models": {"mlp": {"epochs": 3}}}) == (
        "params.yaml has no `augmentation` option for any model yet"
    )
    shipped: dict = {
        "models": {"mlp": {"augmentation": True}, "logistic": {"augmentation": {"enabled": False, "shift": 2}}}
    }
    result = augmentation_variants(shipped)
    assert not isinstance(result, str)
    same, flipped = result
    assert same is shipped and shipped["models"]["mlp"]["augmentation"] is True
    assert flipped["models"] == {
        "mlp": {"augmentation": False},
        "logistic": {"augmentation": {"enabled": True, "shift": 2}},
    }
    assert "flips only" in str(augmentation_variants({"models": {"mlp": {"augmentation": "light"}}}))
