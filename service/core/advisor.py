"""The window advisor: from observed feedback delays, what an implicit negative at window W costs
in fake negatives (eventual positives that arrive after W) and in label wait.

Cohorts are the predictions served in one hour. A cohort of age A has shown every event with a
delay up to A, and nothing about longer ones yet: it is censored there, never read as "no event".
The incidence of events at delay bucket b, per served prediction, is estimated from the cohorts
old enough to have shown all of bucket b (a life-table estimate: every cohort counts for the
delays it fully observed), so recent traffic sharpens the short delays without biasing the long
ones. The cumulative incidence I(d) gives, for a window W below the horizon H:

    fake-negative rate(W) = (I(H) - I(W)) / I(H)

the share of the positives seen within H that arrive after W. The interval is Wilson's for a
proportion, on the number of positives the estimate rests on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from service.core.histogram import bucket_of, upper_bound

Z95 = 1.959964


@dataclass(frozen=True, slots=True)
class Cohort:
    """The predictions served in one hour: how many, how long ago the hour ended (seconds), and
    how many events of the type arrived at each delay bucket."""

    served: int
    age_s: float
    events: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class CurvePoint:
    window_s: float
    fake_negative_rate: float
    low: float  # the 95% interval
    high: float
    median_label_wait_s: float


@dataclass(frozen=True, slots=True)
class Curve:
    horizon_s: float
    positives: int  # events within the horizon the estimate rests on
    cohorts: int  # cohorts old enough to count for at least the shortest delays
    incidence: float  # I(H): positives within the horizon per served prediction
    points: list[CurvePoint]

    def smallest_window(self, max_fake_negative_rate: float) -> CurvePoint | None:
        """The shortest window whose estimated rate meets the target (None: none up to the horizon)."""
        for point in self.points:
            if point.fake_negative_rate <= max_fake_negative_rate:
                return point
        return None


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _last_observed(age_s: float) -> int:
    """The last delay bucket a cohort of this age has shown whole (-1: none yet)."""
    bucket = bucket_of(age_s)
    return bucket if upper_bound(bucket) <= age_s else bucket - 1


def incidence(cohorts: list[Cohort], horizon_s: float) -> tuple[dict[int, float], float]:
    """Per delay bucket up to the horizon: events per served prediction, from the cohorts that saw
    all of it; and how many events those estimates rest on. Linear in the histogram entries."""
    last = bucket_of(horizon_s)
    served_through = [0] * (last + 2)  # served_through[b]: predictions of cohorts that saw bucket b whole
    events = [0] * (last + 1)
    for cohort in cohorts:
        seen = min(_last_observed(cohort.age_s), last)
        if seen < 0:
            continue
        served_through[seen] += cohort.served
        for bucket, count in cohort.events.items():
            if bucket <= seen:
                events[bucket] += count
    for bucket in range(last - 1, -1, -1):  # a cohort that saw bucket b whole saw every shorter one
        served_through[bucket] += served_through[bucket + 1]
    rates = {b: events[b] / served_through[b] for b in range(last + 1) if served_through[b] > 0}
    return rates, float(sum(events[b] for b in rates))


def window_curve(cohorts: list[Cohort], horizon_s: float, candidates: list[float]) -> Curve:
    """The fake-negative rate and median label wait at each candidate window up to the horizon."""
    rates, observed = incidence(cohorts, horizon_s)
    cumulative = Cumulative(rates)
    known_until = cumulative.known_until
    total = sum(rates.values())
    points = []
    for window in sorted(w for w in candidates if 0 < w <= min(horizon_s, known_until)):
        within = cumulative.at(window)
        rate = (total - within) / total if total > 0 else 0.0
        low, high = wilson(rate * observed, observed)
        points.append(CurvePoint(window, rate, low, high, _median_wait(rates, window)))
    eligible = sum(1 for c in cohorts if _last_observed(c.age_s) >= 0)
    return Curve(min(horizon_s, known_until), round(observed), eligible, total, points)


class Cumulative:
    """I(d): the incidence up to delay d, the bucket holding d taken in proportion (log-uniform
    within it, its width being 10%) rather than whole or not at all. Prefix sums: O(1) per delay."""

    def __init__(self, rates: Mapping[int, float]) -> None:
        self.rates = rates
        self.known_until = upper_bound(max(rates)) if rates else 0.0  # the longest delay some cohort saw whole
        last = max(rates, default=-1)
        self._before = [0.0] * (last + 2)  # _before[b]: the incidence of the buckets below b
        for bucket in range(last + 1):
            self._before[bucket + 1] = self._before[bucket] + rates.get(bucket, 0.0)

    def at(self, delay_s: float) -> float:
        holding = bucket_of(delay_s)
        if holding >= len(self._before) - 1:
            return self._before[-1]
        total = self._before[holding]
        if holding in self.rates and holding > 0:
            lower, upper = upper_bound(holding - 1), upper_bound(holding)
            total += self.rates[holding] * math.log(delay_s / lower) / math.log(upper / lower)
        elif holding in self.rates:
            total += self.rates[holding]
        return total


def _median_wait(rates: dict[int, float], window_s: float) -> float:
    """Median time until a prediction has a label under window W: an event's delay when one comes
    first, else W (the implicit negative)."""
    cumulative = 0.0
    for bucket in sorted(rates):
        if upper_bound(bucket) > window_s:
            break
        cumulative += rates[bucket]
        if cumulative >= 0.5:
            return upper_bound(bucket)
    return window_s


def candidate_windows(horizon_s: float) -> list[float]:
    """Round windows a policy would name, up to the horizon: seconds, minutes, hours, days."""
    steps = [1, 2, 5, 10, 15, 20, 30, 45]
    seconds = [float(s) for s in steps] + [60.0 * m for m in steps] + [3600.0 * h for h in (1, 2, 3, 4, 6, 8, 12, 18)]
    seconds += [86400.0 * d for d in (1, 2, 3, 5, 7, 10, 14, 21, 30, 45, 60, 90, 120, 180, 365)]
    return [s for s in seconds if s <= horizon_s] + ([horizon_s] if horizon_s not in seconds else [])
