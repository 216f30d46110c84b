"""Log-bucketed histogram maths for feedback delays: fixed buckets, so counts from any number of
writers add up, and quantiles are read back within one bucket's width (10%)."""

from __future__ import annotations

import math
from collections.abc import Mapping

GROWTH = 1.1
SMALLEST_S = 0.001  # bucket 0 holds every delay up to 1 ms
_LOG_GROWTH = math.log(GROWTH)


def bucket_of(delay_s: float) -> int:
    if delay_s <= SMALLEST_S:
        return 0
    return 1 + math.floor(math.log(delay_s / SMALLEST_S) / _LOG_GROWTH)


def upper_bound(bucket: int) -> float:
    return SMALLEST_S * GROWTH**bucket


def quantile(counts: Mapping[int, int], q: float, max_s: float) -> float | None:
    """The q-quantile as the upper bound of the bucket holding it, never above the exact maximum."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total - 1e-9))  # 0.07 * 100 is 7.000000000000001
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= rank:
            return min(upper_bound(bucket), max_s)
    return max_s
