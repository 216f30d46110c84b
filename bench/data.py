"""A deterministic workload: predictions, one event each (clicks, purchases, ratings) with
log-normal feedback delays, and the labels the bundled recsys policy must give them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from service.core.model import EventRecord, PredictionRecord

BASE = datetime(2026, 10, 1, tzinfo=UTC)  # old timestamps: a backfill, judged by event time alone
WINDOW = timedelta(minutes=10)
SEAL = WINDOW + timedelta(hours=1)


@dataclass(frozen=True)
class Workload:
    predictions: list[PredictionRecord]
    events: list[EventRecord]
    expected_positive: int


def workload(n_predictions: int, seed: int = 7, per_second: int = 1000) -> Workload:
    rng = random.Random(seed)
    predictions, events = [], []
    positives = 0
    for i in range(n_predictions):
        served = BASE + timedelta(seconds=i / per_second)
        pid = f"p{i:09d}"
        predictions.append(
            PredictionRecord(
                prediction_id=pid,
                use_case="recsys",
                served_at=served,
                model="ranker",
                model_version="7",
                features={"position": i % 10, "user_segment": rng.choice("abcd")},
                output={"score": round(rng.random(), 4)},
            )
        )
        delay = timedelta(seconds=rng.lognormvariate(3.5, 1.2))  # median ~33 s, a long tail
        kind = rng.choices(("click", "purchase", "rating"), weights=(60, 25, 15))[0]
        value = rng.randint(1, 5) if kind == "rating" else None
        events.append(
            EventRecord(f"e{i:09d}", pid, kind, occurred_at=served + delay, value=value, actor=f"user:{i % 997}")
        )
        counts = delay <= SEAL
        positives += counts and (kind != "rating" or (value or 0) >= 4)
    return Workload(predictions, events, positives)
