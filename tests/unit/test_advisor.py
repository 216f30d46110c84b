"""The window advisor on workloads whose delay distribution is known: the true fake-negative rate
of the advised window lies within the interval the advisor reports, censored cohorts included."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable

import pytest

from service.core.advisor import Cohort, candidate_windows, wilson, window_curve
from service.core.histogram import bucket_of

HOUR = 3600.0
Sampler = Callable[[random.Random], float]


def lognormal_cdf(x: float, mu: float, sigma: float) -> float:
    return 0.5 * (1 + math.erf((math.log(x) - mu) / (sigma * math.sqrt(2))))


def workload(
    rng: random.Random, sample: Sampler, cohorts: int, served: int, rate: float, age_of: Callable[[int], float]
) -> list[Cohort]:
    """Cohorts whose events are only those that arrived by now: a delay beyond a cohort's age is
    not seen (censored), as in a live store."""
    out = []
    for index in range(cohorts):
        age = age_of(index)
        events: Counter[int] = Counter()
        for _ in range(served):
            if rng.random() < rate:
                delay = sample(rng)
                if delay <= age:
                    events[bucket_of(delay)] += 1
        out.append(Cohort(served=served, age_s=age, events=events))
    return out


LOGNORMAL = (math.log(60.0), 1.2)  # median one minute


def lognormal(rng: random.Random) -> float:
    return rng.lognormvariate(*LOGNORMAL)


def mixture(rng: random.Random) -> float:
    """Most positives within minutes, one in five hours later: a long tail."""
    return (
        rng.lognormvariate(math.log(30.0), 0.8) if rng.random() < 0.8 else rng.lognormvariate(math.log(4 * HOUR), 0.7)
    )


def mixture_cdf(x: float) -> float:
    return 0.8 * lognormal_cdf(x, math.log(30.0), 0.8) + 0.2 * lognormal_cdf(x, math.log(4 * HOUR), 0.7)


CASES = {
    # name: sampler, CDF, horizon, cohort ages
    "lognormal": (lognormal, lambda x: lognormal_cdf(x, *LOGNORMAL), 2 * HOUR, lambda i: (i + 1) * HOUR),
    "long tail": (mixture, mixture_cdf, 24 * HOUR, lambda i: (i + 1) * HOUR),
    # heavy censoring: most cohorts minutes old, a few old enough for the tail
    "censored": (
        lognormal,
        lambda x: lognormal_cdf(x, *LOGNORMAL),
        2 * HOUR,
        lambda i: 300.0 * (i + 1) if i < 40 else 3 * HOUR,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("target", [0.02, 0.05, 0.2])
def test_the_true_rate_of_the_advised_window_is_within_the_interval(case: str, target: float) -> None:
    sample, cdf, horizon, age_of = CASES[case]
    cohorts = workload(random.Random(7), sample, cohorts=48, served=400, rate=0.3, age_of=age_of)
    curve = window_curve(cohorts, horizon, candidate_windows(horizon))
    advised = curve.smallest_window(target)
    assert advised is not None
    truth = (cdf(curve.horizon_s) - cdf(advised.window_s)) / cdf(curve.horizon_s)
    assert advised.low <= truth <= advised.high, (advised, truth)
    assert advised.fake_negative_rate <= target
    # the next shorter candidate would not have met the target: the smallest window was chosen
    shorter = [p for p in curve.points if p.window_s < advised.window_s]
    assert not shorter or shorter[-1].fake_negative_rate > target


def test_censored_cohorts_are_not_read_as_negatives() -> None:
    """Young cohorts have not shown long delays yet; a naive count would call those negatives and
    advise too short a window."""
    mu, sigma = math.log(600.0), 1.0  # median ten minutes
    cohorts = workload(
        random.Random(3),
        lambda rng: rng.lognormvariate(mu, sigma),
        cohorts=48,
        served=400,
        rate=0.3,
        age_of=lambda i: 60.0 * (i + 1) if i < 40 else 3 * HOUR,  # most cohorts minutes old
    )
    horizon, window = 2 * HOUR, 1200.0
    (point,) = window_curve(cohorts, horizon, [window]).points
    naive_total = sum(sum(c.events.values()) for c in cohorts)
    naive_within = sum(n for c in cohorts for b, n in c.events.items() if b < bucket_of(window))
    naive = 1 - naive_within / naive_total
    truth = (lognormal_cdf(horizon, mu, sigma) - lognormal_cdf(window, mu, sigma)) / lognormal_cdf(horizon, mu, sigma)
    assert point.low <= truth <= point.high
    assert naive < point.low  # the naive estimate is biased low, outside the interval


def test_no_old_cohort_means_no_advice_beyond_what_was_seen() -> None:
    cohorts = [Cohort(served=100, age_s=120.0, events={bucket_of(30.0): 10})]
    curve = window_curve(cohorts, 3600.0, candidate_windows(3600.0))
    assert curve.horizon_s <= 120.0
    assert all(p.window_s <= 120.0 for p in curve.points)
    assert window_curve([], 3600.0, [60.0]).points == []


def test_median_label_wait_is_the_window_when_most_never_convert() -> None:
    cohorts = workload(random.Random(1), lognormal, cohorts=24, served=200, rate=0.1, age_of=lambda i: (i + 1) * HOUR)
    curve = window_curve(cohorts, 2 * HOUR, [600.0, 1800.0])
    assert [p.median_label_wait_s for p in curve.points] == [600.0, 1800.0]


def test_wilson_interval() -> None:
    low, high = wilson(5, 100)
    assert 0.02 < low < 0.05 < high < 0.12
    assert wilson(0, 0) == (0.0, 1.0)
