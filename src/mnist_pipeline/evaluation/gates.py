"""The gates a model must pass to replace another: the registry's against its family's champion,
ci-report's against its base. One function for both, so a model that CI passes is one the
registry would take, and no import beyond the params: ci-report reads it without MLflow.

Accuracy alone would promote a model that gains overall while one digit gets worse (issue 23), so
each digit's precision and recall is a gate of its own."""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mnist_pipeline.core.params import RegistryParams

DIGITS = range(10)
# Scores carry four decimals (evaluation/scoring.py); differences are rounded past them, so that
# 0.9871 - 0.9861 counts as the 0.001 it is, not 0.000999….
PLACES = 6


@dataclass(frozen=True)
class Scores:
    """A model's test accuracy and each digit's precision and recall (index = digit); a champion
    registered before per-digit scores were kept may have none (empty tuples)."""

    accuracy: float
    precision: tuple[float, ...] = ()
    recall: tuple[float, ...] = ()

    @classmethod
    def from_rows(cls, accuracy: float, rows: Iterable[Mapping]) -> "Scores":
        """From per_class.csv's rows (digit, precision, recall, …), as csv.DictReader or
        DataFrame.to_dict("records") gives them."""
        by_digit = {int(row["digit"]): (float(row["precision"]), float(row["recall"])) for row in rows}
        if sorted(by_digit) != list(DIGITS):
            raise ValueError(f"per-digit scores for digits {sorted(by_digit)}, not 0 to 9")
        return cls(float(accuracy), tuple(by_digit[d][0] for d in DIGITS), tuple(by_digit[d][1] for d in DIGITS))

    @property
    def per_digit(self) -> bool:
        return len(self.precision) == len(self.recall) == len(DIGITS)


@dataclass(frozen=True)
class Failure:
    gate: str  # the key of `registry` in params.yaml: min_accuracy, min_gain, max_digit_drop
    reason: str  # what failed, with the numbers and the rule
    digit: int | None = None

    @property
    def regression(self) -> bool:
        """Worse than allowed, as opposed to not better enough: ci-report --fail-on-regression fails
        on these. A model that merely does not gain min_gain is no regression (a refactor that
        retrains the same model must not fail CI), but the registry keeps its champion."""
        return self.gate != "min_gain"

    def __str__(self) -> str:
        return self.reason


def judge(candidate: Scores, champion: Scores | None, params: RegistryParams) -> list[Failure]:
    """The gates `candidate` fails against `champion` (None: there is none yet), the largest digit
    drops first; an empty list: it passes them all and may replace the champion.

    - min_accuracy: test accuracy at least this;
    - min_gain: test accuracy above the champion's by at least this, and by something (a tie never
      replaces a champion); a champion whose accuracy is not a number loses to any model;
    - max_digit_drop: no digit's precision or recall more than this below the champion's (skipped
      when either side has no per-digit scores).
    """
    failures = []
    if not candidate.accuracy >= params.min_accuracy:  # `not >=`: NaN fails
        failures.append(
            Failure(
                "min_accuracy",
                f"test accuracy {candidate.accuracy:.4f}, below registry.min_accuracy {params.min_accuracy:g}",
            )
        )
    if champion is None:
        return failures
    gain = round(candidate.accuracy - champion.accuracy, PLACES)
    if not math.isnan(champion.accuracy) and not (gain > 0 and gain >= params.min_gain):
        rule = f"less than registry.min_gain {params.min_gain:g}" if gain > 0 else "no gain"
        failures.append(
            Failure(
                "min_gain", f"test accuracy {champion.accuracy:.4f} → {candidate.accuracy:.4f} ({gain:+.4f}), {rule}"
            )
        )
    if candidate.per_digit and champion.per_digit:
        drops = []
        for score in ("recall", "precision"):
            for digit, old, new in zip(DIGITS, getattr(champion, score), getattr(candidate, score), strict=True):
                drop = round(old - new, PLACES)
                if drop > params.max_digit_drop:
                    reason = (
                        f"digit {digit} {score} {old:.4f} → {new:.4f} ({-drop:+.4f}), more than "
                        f"registry.max_digit_drop {params.max_digit_drop:g}"
                    )
                    drops.append((drop, Failure("max_digit_drop", reason, digit)))
        failures += [failure for _, failure in sorted(drops, key=lambda d: -d[0])]
    return failures


def summary(failures: list[Failure]) -> str:
    """The failures in one line: the first in full, the others counted."""
    if not failures:
        return "passes every gate"
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return f"{failures[0]}{more}"
