"""The runner of `labelloop simulate`: a scenario's traffic paced in real time and posted through
the AsyncClient, then what it sent beside what the service reports.

Each record goes out when due: predictions stamped served_at = start + offset, events
occurred_at = start + offset, never in the future. After `duration` nothing more is served;
events due within `grace` after it are still sent, the rest never happen (the users who never
click). The service's figures are read before and after the run and differenced, so earlier
traffic on the same use case does not blur the counts; its delay quantiles cannot be
differenced, so they are compared only when the use case had no earlier traffic."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from service.client import AsyncClient, LabelloopError, Undelivered
from service.simulate.scenarios import Event, Prediction, Record, Scenario, traffic

QUANTILES = {"p50_s": 0.50, "p90_s": 0.90, "p99_s": 0.99}
HISTOGRAM_SLACK = 1.1  # the service reads quantiles from log buckets 10% wide: within [exact, exact * 1.1]
SETTLE_S = 5.0  # how long to wait for the service's figures to catch up (Kafka mode: the joiners)


@dataclass
class Sent:
    """What a run sent, and what it scheduled but never sent."""

    predictions: int = 0
    events: Counter[str] = field(default_factory=Counter)  # each event_id once
    duplicates: Counter[str] = field(default_factory=Counter)  # the same event sent again
    skewed: Counter[str] = field(default_factory=Counter)  # occurred_at before its served_at
    delays: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # max(0, occurred - served)
    not_happened: Counter[str] = field(default_factory=Counter)  # due after the grace: never sent
    refused: int = 0
    undelivered: int = 0

    def delay_quantiles(self) -> dict[str, dict[str, float]]:
        return {t: {name: nearest_rank(d, q) for name, q in QUANTILES.items()} for t, d in sorted(self.delays.items())}


def nearest_rank(values: list[float], q: float) -> float:
    """The q-quantile as the service defines it: the ceil(q * n)-th smallest."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1]


@dataclass
class Summary:
    scenario: str
    use_case: str
    run: str
    seed: int
    rate: float
    duration: float
    grace: float
    elapsed_s: float
    sent: Sent
    before: dict[str, Any] | None  # the service's figures for the use case, before and after
    after: dict[str, Any] | None
    service_error: str | None

    def service(self) -> dict[str, Any] | None:
        """The service's figures for this run: counts as differences, quantiles as read."""
        if self.after is None:
            return None
        before = self.before or {}

        def delta(key: str) -> dict[str, int]:
            was = before.get(key) or {}
            return {t: n - was.get(t, 0) for t, n in (self.after or {}).get(key, {}).items() if n - was.get(t, 0)}

        return {
            "served": self.after["served"] - before.get("served", 0),
            "events": delta("events"),
            "clock_skew": delta("clock_skew_by_type"),
            "feedback_delay": {
                t: {k: v for k, v in d.items() if k in (*QUANTILES, "max_s")}
                for t, d in self.after.get("feedback_delay", {}).items()
            },
            "earlier_served": before.get("served", 0),
        }

    def checks(self) -> dict[str, bool]:
        """Per figure, whether the service agrees with what was sent."""
        service = self.service()
        if service is None:
            return {}
        sent = self.sent
        result = {"served": service["served"] == sent.predictions}
        for t in sorted(set(sent.events) | set(service["events"])):
            result[f"events.{t}"] = service["events"].get(t, 0) == sent.events[t]
        for t in sorted(set(sent.skewed) | set(service["clock_skew"])):
            result[f"clock_skew.{t}"] = service["clock_skew"].get(t, 0) == sent.skewed[t]
        if service["earlier_served"] == 0:
            for t, mine in sent.delay_quantiles().items():
                theirs = service["feedback_delay"].get(t, {})
                result[f"delay.{t}"] = all(
                    theirs.get(k) is not None and within_histogram(mine[k], theirs[k]) for k in QUANTILES
                )
        return result

    def agrees(self) -> bool | None:
        checks = self.checks()
        return all(checks.values()) if checks else None

    def as_json(self) -> dict[str, Any]:
        sent = self.sent
        return {
            "scenario": self.scenario,
            "use_case": self.use_case,
            "run": self.run,
            "seed": self.seed,
            "rate": self.rate,
            "duration": self.duration,
            "grace": self.grace,
            "elapsed_s": round(self.elapsed_s, 3),
            "sent": {
                "predictions": sent.predictions,
                "events": dict(sorted(sent.events.items())),
                "duplicates": dict(sorted(sent.duplicates.items())),
                "skewed": dict(sorted(sent.skewed.items())),
                "feedback_delay": sent.delay_quantiles(),
                "not_happened": dict(sorted(sent.not_happened.items())),
                "refused": sent.refused,
                "undelivered": sent.undelivered,
            },
            "service": self.service(),
            "service_error": self.service_error,
            "checks": self.checks(),
            "agrees": self.agrees(),
        }


def within_histogram(exact: float, read: float) -> bool:
    """A quantile read from the service's log buckets against the exact one: at or above it, at
    most one bucket (10%) higher; bucket 0 holds everything up to 1 ms."""
    return exact - 1e-6 <= read <= max(exact * HISTOGRAM_SLACK, 0.001) + 1e-6


Progress = Callable[[float, Sent], None]  # seconds elapsed, what was sent so far


async def simulate(
    scenario: Scenario,
    client: AsyncClient,
    *,
    rate: float,
    duration: float,
    grace: float,
    seed: int,
    run: str | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Serve for `duration` seconds, send what is due until `grace` after, flush, and read the
    service's figures."""
    run = run or f"sim-{secrets.token_hex(3)}"
    use_case = scenario.use_case
    before, service_error = await _figures(client, use_case)
    sent = Sent()
    records = traffic(scenario, rate, duration, random.Random(seed), run)
    wall = datetime.now(UTC)
    start = time.monotonic()
    served_at: dict[str, datetime] = {}
    end = duration + grace

    def stamp(offset: float) -> datetime:
        return wall + timedelta(seconds=offset)

    for due, record in records:
        if due > end:
            _count_never(sent, record, records)
            break
        while (wait := start + due - time.monotonic()) > 0:
            if progress is not None:
                progress(time.monotonic() - start, sent)
            await asyncio.sleep(min(wait, 0.1))
        if isinstance(record, Prediction):
            served_at[record.prediction_id] = stamp(record.served_at)
            await client.log_prediction(
                record.prediction_id,
                record.use_case,
                served_at=served_at[record.prediction_id],
                model=record.model,
                model_version=record.model_version,
                subject_id=record.subject_id,
                features=record.features,
                output=record.output,
            )
            sent.predictions += 1
        else:
            occurred = stamp(record.occurred_at)
            await client.log_event(
                record.event_id,
                record.prediction_id,
                record.type,
                occurred_at=occurred,
                value=record.value,
                actor=record.actor,
            )
            _count_event(sent, record, occurred, served_at[record.prediction_id])
    while (wait := start + end - time.monotonic()) > 0:  # the grace runs its course: the bar ends on time
        if progress is not None:
            progress(time.monotonic() - start, sent)
        await asyncio.sleep(min(wait, 0.1))
    try:
        await client.flush()
    except Undelivered as exc:
        sent.refused, sent.undelivered = len(exc.rejected), exc.failing
    elapsed = time.monotonic() - start
    if progress is not None:
        progress(elapsed, sent)
    after = None
    if before is not None:
        after, service_error = await _settled(client, use_case, before, sent)
    return Summary(
        scenario.name, use_case, run, seed, rate, duration, grace, elapsed, sent, before, after, service_error
    )


def _count_event(sent: Sent, event: Event, occurred: datetime, served: datetime) -> None:
    if event.duplicate:
        sent.duplicates[event.type] += 1
        return
    sent.events[event.type] += 1
    delay = (occurred - served).total_seconds()  # from the timestamps sent, as the service computes it
    if delay < 0:
        sent.skewed[event.type] += 1
    sent.delays[event.type].append(max(0.0, delay))


def _count_never(sent: Sent, first: Record, rest: Iterator[tuple[float, Record]]) -> None:
    """What was scheduled after the end: it never happens (predictions all come before it)."""
    for later in itertools.chain([first], (r for _, r in rest)):
        if isinstance(later, Event) and not later.duplicate:
            sent.not_happened[later.type] += 1


async def _figures(client: AsyncClient, use_case: str) -> tuple[dict[str, Any] | None, str | None]:
    """The service's feedback-loop figures for the use case, or why they cannot be read (a key
    without the ops scope: 403)."""
    try:
        body = await client.get("/v1/metrics/feedback-loop", use_case=use_case)
    except LabelloopError as exc:
        return None, str(exc)
    figures: dict[str, Any] = body["use_cases"][use_case]
    return figures, None


async def _settled(
    client: AsyncClient, use_case: str, before: dict[str, Any], sent: Sent
) -> tuple[dict[str, Any] | None, str | None]:
    """The figures once they count what was sent, or as they stand after SETTLE_S (in
    embedded mode at once: a 202 is answered after the commit)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        after, failure = await _figures(client, use_case)
        if after is None:
            return None, failure
        caught_up = after["served"] - before["served"] >= sent.predictions and sum(after["events"].values()) - sum(
            before["events"].values()
        ) >= sum(sent.events.values())
        if caught_up or time.monotonic() > deadline:
            return after, None
        await asyncio.sleep(0.25)
