"""The model-quality math (service/core/quality.py) against scikit-learn on the same rows."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    brier_score_loss,
    log_loss,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

from service.core.policy import UseCasePolicy
from service.core.quality import (
    BINS,
    SUMS,
    InvalidOutput,
    binary_figures,
    model_output,
    part,
    regression_figures,
)


def aggregate(
    task: str, rows: Sequence[tuple[float, float]], sign: int = 1
) -> tuple[list[float], dict[int, list[float]]]:
    """The sums and bins of (score, label) rows, as the store keeps them."""
    sums, bins = [0.0] * len(SUMS), {}
    add_to(task, sums, bins, rows, sign)
    return sums, bins


def add_to(
    task: str, sums: list[float], bins: dict[int, list[float]], rows: Sequence[tuple[float, float]], sign: int
) -> None:
    for score, label in rows:
        p = part(task, score, label)
        assert p is not None
        for i, value in enumerate(p.sums):
            sums[i] += sign * value
        if p.bin is not None:
            counts = bins.setdefault(p.bin, [0.0, 0.0, 0.0])
            counts[1 if p.positive else 0] += sign
            counts[2] += sign * score


def binary_rows(n: int, seed: int) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = int(rng.random() < 0.3)
        rows.append((rng.betavariate(3, 2) if label else rng.betavariate(2, 3), label))
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_binary_figures_are_scikit_learns(seed: int) -> None:
    rows = binary_rows(5000, seed)
    y, p = [label for _, label in rows], [score for score, _ in rows]
    figures = binary_figures(*aggregate("binary", rows))
    assert figures["count"] == 5000
    assert figures["positives"] == sum(y)
    assert figures["positive_rate"] == pytest.approx(sum(y) / 5000)
    assert figures["mean_score"] == pytest.approx(sum(p) / 5000)
    assert figures["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-9)
    assert figures["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-9)
    exact = roc_auc_score(y, p)
    assert 0 < figures["roc_auc_max_error"] < 0.01
    assert abs(figures["roc_auc"] - exact) <= figures["roc_auc_max_error"]
    assert figures["roc_auc"] == pytest.approx(exact, abs=1e-3)  # in practice far inside the bound
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10)
    table = figures["calibration"]
    assert [c["positive_rate"] for c in table] == pytest.approx(list(prob_true))
    assert [c["mean_score"] for c in table] == pytest.approx(list(prob_pred))
    assert sum(c["count"] for c in table) == 5000
    assert [c["from"] for c in table] == pytest.approx([k / 10 for k in range(10)])


def test_scores_on_the_bin_grid_give_the_exact_auc() -> None:
    rng = random.Random(4)
    rows = [((rng.randrange(BINS) + 0.5) / BINS, int(rng.random() < 0.4)) for _ in range(3000)]
    figures = binary_figures(*aggregate("binary", rows))
    assert figures["roc_auc"] == pytest.approx(roc_auc_score([y for _, y in rows], [s for s, _ in rows]), rel=1e-12)


def test_a_revised_label_takes_back_what_it_added() -> None:
    rows = binary_rows(400, 5)
    revised = [(score, 1 - label) for score, label in rows[:50]]  # say implicit negatives turned 1
    sums, bins = aggregate("binary", rows)
    add_to("binary", sums, bins, rows[:50], -1)
    add_to("binary", sums, bins, revised, 1)
    direct = binary_figures(*aggregate("binary", revised + rows[50:]))
    moved = binary_figures(sums, bins)
    assert moved.keys() == direct.keys()
    for name in ("count", "positives", "positive_rate", "mean_score", "log_loss", "brier", "roc_auc"):
        assert moved[name] == pytest.approx(direct[name], rel=1e-9), name
    assert len(moved["calibration"]) == len(direct["calibration"])
    for got, want in zip(moved["calibration"], direct["calibration"], strict=True):
        assert got == pytest.approx(want)


def test_one_class_has_no_auc_and_no_rows_no_figures() -> None:
    figures = binary_figures(*aggregate("binary", [(0.2, 0), (0.6, 0)]))
    assert (figures["roc_auc"], figures["roc_auc_max_error"]) == (None, None)
    assert figures["log_loss"] == pytest.approx(log_loss([0, 0], [0.2, 0.6], labels=[0, 1]))
    assert binary_figures(*aggregate("binary", [])) == {"count": 0}
    assert regression_figures(aggregate("regression", [])[0]) == {"count": 0}


def test_certain_scores_are_clipped_like_scikit_learn() -> None:
    rows = [(0.0, 1), (1.0, 1), (0.0, 0)]
    figures = binary_figures(*aggregate("binary", rows))
    assert math.isfinite(figures["log_loss"])
    assert figures["log_loss"] == pytest.approx(log_loss([1, 1, 0], [0.0, 1.0, 0.0]), rel=1e-9)


def test_regression_figures_are_scikit_learns() -> None:
    rng = random.Random(6)
    rows = [(rng.lognormvariate(7, 0.5), rng.lognormvariate(7, 0.6)) for _ in range(2000)]  # (estimate, duration)
    estimates, labels = [e for e, _ in rows], [a for _, a in rows]
    sums, bins = aggregate("regression", rows)
    assert bins == {}
    figures = regression_figures(sums)
    assert figures["count"] == 2000
    assert figures["mae"] == pytest.approx(mean_absolute_error(labels, estimates), rel=1e-9)
    assert figures["rmse"] == pytest.approx(root_mean_squared_error(labels, estimates), rel=1e-9)
    assert figures["bias"] == pytest.approx(sum(estimates) / 2000 - sum(labels) / 2000, rel=1e-9)
    assert figures["mean_label"] == pytest.approx(sum(labels) / 2000)


def _policy(task: str, path: str) -> UseCasePolicy:
    events = {"binary": {"click": {"kind": "positive"}}, "regression": {"done": {"kind": "natural"}}}[task]
    named = "score" if task == "binary" else "estimate"
    return UseCasePolicy.model_validate({"task": task, "window": "10m", "events": events, named: path})


def test_the_output_path_and_what_it_may_hold() -> None:
    binary = _policy("binary", "output.scores.click")
    assert model_output(binary, {"scores": {"click": 0.25}}) == 0.25
    assert model_output(binary, {"scores": {"click": 1}}) == 1.0
    for unscored in (None, {}, {"scores": 0.3}, {"scores": {"click": None}}):
        assert model_output(binary, unscored) is None  # not scored, not refused
    for bad, reason in (("0.3", "number"), (True, "number"), (1.5, "from 0 to 1"), (-0.1, "from 0 to 1")):
        with pytest.raises(InvalidOutput, match=reason):
            model_output(binary, {"scores": {"click": bad}})
    regression = _policy("regression", "output.eta_s")
    assert model_output(regression, {"eta_s": 1712}) == 1712.0
    with pytest.raises(InvalidOutput, match="number"):
        model_output(regression, {"eta_s": float("inf")})
