"""The gates one model must pass to replace another (evaluation/gates.py), which the registry and
ci-report both apply: each rule at its edge, with the line a user reads."""

import math

import pytest

from mnist_pipeline.core.params import RegistryParams
from mnist_pipeline.evaluation.gates import Scores, judge, summary

CHAMPION = Scores(0.9800, (0.98,) * 10, (0.98,) * 10)


def with_digit(accuracy: float, digit: int, score: str, value: float) -> Scores:
    values = tuple(value if d == digit else 0.98 for d in range(10))
    other = (0.98,) * 10
    return Scores(accuracy, *((values, other) if score == "precision" else (other, values)))


def rules(**values) -> RegistryParams:
    return RegistryParams(enabled=True, **values)


def test_the_shipped_defaults_pass_a_better_model_and_refuse_a_digit_that_falls_three_points():
    assert judge(with_digit(0.9810, 3, "recall", 0.96), CHAMPION, rules()) == []  # -0.02: at the limit
    failures = judge(with_digit(0.9850, 3, "recall", 0.95), CHAMPION, rules())
    assert [(f.gate, f.digit, f.regression) for f in failures] == [("max_digit_drop", 3, True)]
    assert str(failures[0]) == "digit 3 recall 0.9800 → 0.9500 (-0.0300), more than registry.max_digit_drop 0.02"


def test_precision_counts_as_recall_does_and_the_largest_drop_comes_first():
    candidate = Scores(0.99, tuple(0.95 if d == 1 else 0.98 for d in range(10)), (0.90,) + (0.98,) * 9)
    failures = judge(candidate, CHAMPION, rules())
    assert [str(f).split(",")[0] for f in failures] == [
        "digit 0 recall 0.9800 → 0.9000 (-0.0800)",
        "digit 1 precision 0.9800 → 0.9500 (-0.0300)",
    ]
    assert summary(failures) == f"{failures[0]} (and 1 more)"


@pytest.mark.parametrize(
    ("accuracy", "min_gain", "passes"),
    [(0.9800, 0.0, False), (0.9801, 0.0, True), (0.9849, 0.005, False), (0.9850, 0.005, True)],
    ids=["tie", "any-gain", "short-of-min-gain", "min-gain-exactly"],
)
def test_min_gain_is_the_least_rise_that_counts_and_a_tie_never_does(accuracy, min_gain, passes):
    failures = judge(Scores(accuracy, (0.98,) * 10, (0.98,) * 10), CHAMPION, rules(min_gain=min_gain))
    assert (failures == []) == passes
    if not passes:
        assert [(f.gate, f.regression) for f in failures] == [("min_gain", False)]


def test_min_accuracy_holds_with_or_without_a_champion_and_nan_fails_it():
    assert [f.gate for f in judge(Scores(0.89), None, rules(min_accuracy=0.9))] == ["min_accuracy"]
    assert str(judge(Scores(0.89), None, rules(min_accuracy=0.9))[0]) == (
        "test accuracy 0.8900, below registry.min_accuracy 0.9"
    )
    assert [f.gate for f in judge(Scores(math.nan), None, rules())] == ["min_accuracy"]
    assert judge(Scores(0.9), None, rules(min_accuracy=0.9)) == []


def test_a_champion_without_per_digit_scores_or_accuracy_is_judged_on_what_it_has():
    assert judge(with_digit(0.99, 3, "recall", 0.5), Scores(0.98), rules()) == []
    assert judge(Scores(0.5), Scores(math.nan), rules()) == []


def test_from_rows_wants_every_digit():
    rows = [{"digit": d, "precision": 0.9, "recall": 0.8 + d / 100} for d in range(10)]
    assert Scores.from_rows(0.9, rows).recall[9] == pytest.approx(0.89)
    with pytest.raises(ValueError, match="not 0 to 9"):
        Scores.from_rows(0.9, rows[:9])
