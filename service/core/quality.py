"""Live model quality: what one labeled prediction adds to its model's figures, and the figures
from those sums.

Every figure is kept as sums over labeled predictions, so a label that changes (an implicit negative
revised to 1, provisional become final) takes back what it added and adds its new part: exact for
count, positive rate, mean score, log loss, Brier score, MAE, RMSE and bias. ROC AUC and the
calibration table come from a histogram of scores per label class (BINS bins of equal width):
pairs of a positive and a negative in one bin are counted as ties, so the AUC is within
`roc_auc_max_error` (half the share of such pairs, answered with it) of the exact one, and exact
when no bin holds both classes at different scores.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.core.policy import UseCasePolicy

BINS = 100  # score bins [k/100, (k+1)/100), the last one closed
CALIBRATION_BINS = 10  # each the sum of BINS // CALIBRATION_BINS score bins
EPS = sys.float_info.epsilon  # log loss clips scores to [EPS, 1 - EPS], as scikit-learn does
SUMS = ("count", "label_sum", "score_sum", "abs_error_sum", "squared_error_sum", "log_loss_sum")

Bins = Mapping[int, Sequence[float]]  # score bin -> (negatives, positives, sum of their scores)


class InvalidOutput(ValueError):
    """A prediction's output holds something other than a score or estimate where the policy says."""


def model_output(policy: UseCasePolicy, output: Mapping[str, Any] | None) -> float | None:
    """The score (binary) or estimate (regression) the policy names in a prediction's output; None
    when the policy names none or the output does not hold it (that prediction is not scored)."""
    path = policy.output_path
    value: Any = output
    if path is None:
        return None
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidOutput("must be a number")
    if policy.task == "binary" and not 0 <= value <= 1:
        raise InvalidOutput("must be a probability, from 0 to 1")
    return float(value)


@dataclass(frozen=True, slots=True)
class Part:
    """What one labeled prediction adds: SUMS, and (binary) its score bin and class."""

    sums: tuple[float, ...]
    bin: int | None
    positive: bool


def score_bin(score: float) -> int:
    return min(int(score * BINS), BINS - 1)


def part(task: str, score: float, label: float) -> Part | None:
    """None: not counted, its sums would not be finite (a squared error of an estimate near
    1e154 overflows; inf - inf later is NaN). Decided by the values alone, so what was left out
    when the label was added is left out when it is taken back."""
    error = score - label
    if task != "binary":
        sums: tuple[float, ...] = (1, label, score, abs(error), error * error, 0.0)
        return Part(sums, None, False) if all(map(math.isfinite, sums)) else None
    p = min(max(score, EPS), 1 - EPS)
    log_loss = -math.log(p) if label else -math.log(1 - p)
    return Part((1, label, score, abs(error), error * error, log_loss), score_bin(score), bool(label))


def binary_figures(sums: Sequence[float], bins: Bins) -> dict[str, Any]:
    count, positives, score_sum, _, squared, log_loss = sums
    if count <= 0:
        return {"count": 0}
    auc, max_error = roc_auc(bins)
    return {
        "count": int(count),
        "positives": round(positives),
        "positive_rate": positives / count,
        "mean_score": score_sum / count,
        "log_loss": max(0.0, log_loss) / count,
        "brier": max(0.0, squared) / count,
        "roc_auc": auc,
        "roc_auc_max_error": max_error,
        "calibration": calibration(bins),
    }


def regression_figures(sums: Sequence[float]) -> dict[str, Any]:
    count, label_sum, estimate_sum, absolute, squared, _ = sums
    if count <= 0:
        return {"count": 0}
    return {
        "count": int(count),
        "mean_label": label_sum / count,
        "mean_estimate": estimate_sum / count,
        "mae": max(0.0, absolute) / count,
        "rmse": math.sqrt(max(0.0, squared) / count),
        "bias": (estimate_sum - label_sum) / count,  # above 0: the model overestimates
    }


def roc_auc(bins: Bins) -> tuple[float | None, float | None]:
    """The ROC AUC with pairs in one bin as ties, and the most it can differ from the exact one
    (half the share of positive-negative pairs within one bin); None without both classes."""
    negatives = sum(b[0] for b in bins.values())
    positives = sum(b[1] for b in bins.values())
    pairs = negatives * positives
    if pairs < 0.5:
        return None, None
    below = ties = above = 0.0
    for k in sorted(bins):
        neg, pos = bins[k][0], bins[k][1]
        above += pos * below
        ties += pos * neg
        below += neg
    return (above + ties / 2) / pairs, ties / 2 / pairs


def calibration(bins: Bins) -> list[dict[str, Any]]:
    """Per calibration bin with predictions: its range [from, to), count, mean score, positive rate."""
    width = BINS // CALIBRATION_BINS
    merged: dict[int, list[float]] = {}
    for k, (neg, pos, score_sum) in bins.items():
        entry = merged.setdefault(k // width, [0.0, 0.0, 0.0])
        entry[0] += neg + pos
        entry[1] += pos
        entry[2] += score_sum
    return [
        {
            "from": c / CALIBRATION_BINS,
            "to": (c + 1) / CALIBRATION_BINS,
            "count": round(n),
            "mean_score": score_sum / n,
            "positive_rate": pos / n,
        }
        for c, (n, pos, score_sum) in sorted(merged.items())
        if n >= 0.5
    ]
