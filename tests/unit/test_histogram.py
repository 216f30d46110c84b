"""Log-bucketed delay histograms: bucket boundaries and quantiles read back within 10%."""

from __future__ import annotations

import math
import random
from collections import Counter
from fractions import Fraction

import pytest

from service.core.histogram import GROWTH, SMALLEST_S, bucket_of, quantile, upper_bound

REL = 1e-9  # float slack on the bucket boundaries


def true_quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile with exact arithmetic on q."""
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(str(q)) * len(ordered)))
    return ordered[rank - 1]


def histogram(values: list[float]) -> Counter[int]:
    return Counter(bucket_of(v) for v in values)


# --- buckets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [-5.0, 0.0, 0.0005, SMALLEST_S])
def test_bucket_zero_holds_everything_up_to_a_millisecond(delay: float) -> None:
    assert bucket_of(delay) == 0


def test_bucket_above_a_millisecond_is_positive() -> None:
    assert bucket_of(SMALLEST_S * 1.0001) == 1
    assert bucket_of(SMALLEST_S * GROWTH * 1.0001) == 2


def test_bucket_of_monotonic() -> None:
    rng = random.Random(1234)
    delays = sorted(rng.lognormvariate(0, 4) for _ in range(5000))
    buckets = [bucket_of(d) for d in delays]
    assert buckets == sorted(buckets)
    assert len(set(buckets)) > 50  # the sample really spans many buckets


def test_bucket_of_monotonic_on_a_fine_grid() -> None:
    previous = bucket_of(0.0)
    for i in range(1, 3000):
        delay = 0.0001 * 1.01**i  # steps of 1%, finer than a bucket: never skips one
        current = bucket_of(delay)
        assert current >= previous, delay
        assert current - previous <= 1, delay
        previous = current


def test_bucket_bounds_hold_the_value() -> None:
    rng = random.Random(99)
    for _ in range(5000):
        delay = rng.uniform(0.0011, 90 * 86400)
        b = bucket_of(delay)
        assert b >= 1
        assert upper_bound(b - 1) <= delay * (1 + REL)
        assert delay <= upper_bound(b) * (1 + REL)
        assert upper_bound(b) / upper_bound(b - 1) == pytest.approx(GROWTH)


# --- quantiles ------------------------------------------------------------------------------------


def test_quantile_of_empty_is_none() -> None:
    assert quantile({}, 0.5, 0.0) is None
    assert quantile({3: 0, 7: 0}, 0.99, 12.0) is None


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("q", [0.01, 0.25, 0.5, 0.9, 0.95, 0.99])
def test_quantile_within_ten_percent(seed: int, q: float) -> None:
    rng = random.Random(seed)
    # Feedback delays from ~10 ms to days, heavy-tailed; all above the 1 ms floor bucket.
    values = [0.01 + rng.lognormvariate(3, 2.5) for _ in range(2000)]
    estimate = quantile(histogram(values), q, max(values))
    expected = true_quantile(values, q)
    assert estimate is not None
    assert expected * (1 - REL) <= estimate <= expected * GROWTH * (1 + REL)
    assert estimate <= max(values)


@pytest.mark.parametrize("seed", [10, 11])
def test_quantile_uniform_data(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.uniform(1.0, 600.0) for _ in range(1000)]
    for q in (0.5, 0.9, 0.99):
        estimate = quantile(histogram(values), q, max(values))
        assert estimate is not None
        assert abs(estimate - true_quantile(values, q)) <= 0.1 * true_quantile(values, q)


def test_quantile_never_above_max() -> None:
    rng = random.Random(7)
    values = [rng.uniform(1.0, 100.0) for _ in range(500)]
    top = max(values)
    counts = histogram(values)
    assert upper_bound(bucket_of(top)) > top  # the bucket bound alone would overshoot
    for q in (0.0, 0.5, 0.99, 1.0):
        estimate = quantile(counts, q, top)
        assert estimate is not None
        assert estimate <= top
    assert quantile(counts, 1.0, top) == top


def test_quantile_single_value() -> None:
    assert quantile({bucket_of(30.0): 1}, 0.5, 30.0) == 30.0
    assert quantile({bucket_of(0.0): 4}, 0.99, 0.0) == 0.0


def test_quantile_picks_the_bucket_at_rank() -> None:
    counts = {bucket_of(1.0): 50, bucket_of(100.0): 50}
    p50 = quantile(counts, 0.5, 100.0)
    p51 = quantile(counts, 0.51, 100.0)
    assert p50 == pytest.approx(upper_bound(bucket_of(1.0)))
    assert 1.0 <= p50 <= 1.1  # type: ignore[operator]
    assert p51 == 100.0
    # Nearest rank rounds up: the median of three values is the second one.
    assert quantile({bucket_of(1.0): 1, bucket_of(100.0): 2}, 0.5, 100.0) == 100.0
    assert quantile({bucket_of(1.0): 2, bucket_of(100.0): 1}, 0.5, 100.0) == upper_bound(bucket_of(1.0))


def test_quantile_adds_up_across_writers() -> None:
    """Fixed buckets: merging two writers' counts equals the histogram of all values."""
    rng = random.Random(5)
    a = [rng.expovariate(0.1) + 0.01 for _ in range(300)]
    b = [rng.expovariate(0.01) + 0.01 for _ in range(700)]
    merged = histogram(a) + histogram(b)
    assert merged == histogram(a + b)
    for q in (0.5, 0.9, 0.99):
        assert quantile(merged, q, max(a + b)) == quantile(histogram(a + b), q, max(a + b))
