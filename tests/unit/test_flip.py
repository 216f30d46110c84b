"""p_flip from the delay cohorts: the formula on counts worked by hand, against a log-normal
workload whose answer is known, and its edges (sealed, censored, several positive types)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from service.core.advisor import Cohort, Cumulative
from service.core.flip import flip_curve
from service.core.histogram import bucket_of, upper_bound

DAY = 86400.0
SEAL = 4200.0  # recsys: 10 min window + 1 h lateness


def old(events: dict[int, int], served: int = 1000, age: float = DAY) -> Cohort:
    return Cohort(served=served, age_s=age, events=events)


def test_worked_by_hand() -> None:
    """Of 1000 served: 200 positives by 60 s, 100 more between 600 s and the seal. An implicit
    negative that waited 600 s is one of the 800 without one; 100 of those flip: 1/8."""
    curve = flip_curve([[old({bucket_of(50.0): 200, bucket_of(1000.0): 100})]], SEAL)
    assert curve is not None
    assert curve.p_flip(600.0) == pytest.approx(100 / 800)
    assert curve.p_flip(SEAL) == 0.0  # sealed: nothing can flip it
    assert curve.p_flip(2000.0) == pytest.approx(0.0)  # the late positives all came before 2000 s


def test_matches_a_lognormal_workload() -> None:
    rng = random.Random(5)
    rate, mu, sigma = 0.4, math.log(300.0), 1.0
    delays = [rng.lognormvariate(mu, sigma) for _ in range(200_000) if rng.random() < rate]
    events = Counter(bucket_of(d) for d in delays)
    curve = flip_curve([[old(dict(events), served=200_000)]], SEAL)
    assert curve is not None

    def cdf(x: float) -> float:
        return 0.5 * (1 + math.erf((math.log(x) - mu) / (sigma * math.sqrt(2))))

    for waited in (600.0, 1200.0, 2400.0, 4000.0):
        truth = rate * (cdf(SEAL) - cdf(waited)) / (1 - rate * cdf(waited))
        assert curve.p_flip(waited) == pytest.approx(truth, abs=0.004), waited


def test_none_until_some_cohort_was_watched_until_the_seal() -> None:
    young = [old({bucket_of(50.0): 10}, age=SEAL / 2)]
    assert flip_curve([young], SEAL) is None
    assert flip_curve([[]], SEAL) is None
    assert flip_curve([[*young, old({})]], SEAL) is not None


def test_the_type_most_likely_still_to_come_decides() -> None:
    clicks = [old({bucket_of(50.0): 200, bucket_of(1000.0): 100})]
    purchases = [old({bucket_of(900.0): 20})]
    curve = flip_curve([clicks, purchases], SEAL)
    assert curve is not None
    assert curve.p_flip(600.0) == pytest.approx(100 / 800)
    assert flip_curve([purchases], SEAL).p_flip(600.0) == pytest.approx(20 / 1000)  # type: ignore[union-attr]


def test_every_prediction_already_positive_leaves_nothing_to_flip() -> None:
    curve = flip_curve([[old({bucket_of(50.0): 1000, bucket_of(1000.0): 5})]], SEAL)
    assert curve is not None
    assert curve.p_flip(600.0) == 0.0


def test_cumulative_incidence_interpolates_within_a_bucket() -> None:
    rates = {0: 0.0, 10: 0.1, 11: 0.2}
    cumulative = Cumulative(rates)
    assert cumulative.at(upper_bound(10)) == pytest.approx(0.1)
    assert cumulative.at(upper_bound(11)) == pytest.approx(0.3)
    middle = math.sqrt(upper_bound(10) * upper_bound(11))  # halfway on the log scale
    assert cumulative.at(middle) == pytest.approx(0.2)
    assert cumulative.at(1e9) == pytest.approx(0.3)  # beyond what was seen: all of it
    assert cumulative.known_until == upper_bound(11)
