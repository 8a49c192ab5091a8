"""The model card (evaluation/model_card.py) from plain values: every section a reader looks for,
what it says when a fact was not recorded, and MLflow's limit on a version's description."""

import dataclasses

from mnist_pipeline.data.idx import SHA256
from mnist_pipeline.evaluation.gates import Scores
from mnist_pipeline.evaluation.model_card import MAX_CHARS, Card, describe, model_card

SCORES = Scores(0.9867, tuple(0.98 + d / 1000 for d in range(10)), tuple(0.97 + d / 1000 for d in range(10)))
CHAMPION = ("2", Scores(0.9850, (0.98,) * 10, (0.97,) * 10))
PARAMS = {"type": "mlp", "hidden_units": "[512, 512]", "activation": "relu", "dropout": "0.2", "data.seed": "42"}


FULL = Card(
    name="mnist-mlp",
    version="3",
    model="mlp",
    model_id="m-abc",
    run_id="r123",
    scores=SCORES,
    champion=CHAMPION,
    run_name="mlp-20250101-120000",
    experiment="mnist",
    params=PARAMS,
    confusions=[(4, 9, 12), (7, 2, 9)],
    split={"training": 55000, "validation": 5000, "test": 10000},
    data_sha256=SHA256,
    inputs_md5={"data/processed": "18d8.dir", "models/mlp": "75b6.dir"},
    git_commit="a64f849",
    git_dirty="false",
    host="ci-runner",
    compute_dtype="mixed_bfloat16",
    fit_seconds=123.45,
    epochs_trained=30,
)


def card(**changes) -> Card:
    return dataclasses.replace(FULL, **changes)


def test_a_card_says_what_the_model_is_how_it_scores_where_it_comes_from_and_how_to_call_it():
    text = model_card(card())
    lines = text.splitlines()
    assert lines[0] == "# mnist-mlp version 3"
    assert "**mlp**: an MLP: 784 pixels → 512 → 512 → 10 digits, softmax (relu, dropout 0.2)." in text
    assert (
        "**Test accuracy 0.9867** on 10,000 images (version 2, the champion it was compared with: 0.9850, +0.0017)."
    ) in lines
    assert "| digit | precision | recall | v2 precision | v2 recall |" in lines
    assert "| 9 | 0.9890 | 0.9790 | 0.9800 | 0.9700 |" in lines
    assert "Worst confusions (true → predicted: images): 4 → 9: 12, 7 → 2: 9." in lines
    assert all(f"`{name}` `{digest}`" in text for name, digest in SHA256.items())
    assert "- Split seed 42: 55,000 training, 5,000 validation, 10,000 test images" in lines
    assert "- Git commit `a64f849`, uncommitted changes: false" in lines
    assert "`data/processed` `18d8.dir`, `models/mlp` `75b6.dir`" in text
    assert "Machine `ci-runner`, arithmetic `mixed_bfloat16`" in text and "fit 123.5 s over 30 epochs" in text
    assert "python -m mnist_pipeline predict digit.png --model models:/mnist-mlp/3" in lines
    assert "mlflow models serve -m models:/mnist-mlp/3 --env-manager local -h 127.0.0.1 -p 5001" in lines
    assert len(text) < 3500  # room under MLflow's 5,000 for long names and params


def test_the_first_version_and_missing_facts_say_so():
    text = model_card(card(champion=None, host=None, git_commit=None, fit_seconds=None, epochs_trained=None))
    assert "(the first of its family)" in text and "| digit | precision | recall |" in text
    assert "Machine `not recorded`" in text and "fit not recorded." in text and "Git commit `not recorded`" in text
    assert describe({"type": "logistic"}) == "a logistic regression: 784 pixels → 10 digits, softmax"


def test_a_card_longer_than_mlflows_limit_is_cut_with_a_note_where_the_whole_is():
    text = model_card(card(experiment="e" * 6000))
    assert len(text) == MAX_CHARS
    assert text.endswith("the whole card is `model_card.md` in run `r123`)\n")
