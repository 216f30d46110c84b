"""A backfill of old records, sent in event-time order as fast as the client can, gives exactly
the labels the same records gave live, where the wall clock moved with them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from service.api.runtime import Runtime
from tests.conftest import T0, FakeClock
from tests.helpers import MIN, Timeline

SEC = timedelta(seconds=1)

# Feedback per prediction, as (event type, offset from serving, value): every rule of the recsys policy.
FEEDBACK: list[list[tuple[str, timedelta, Any]]] = [
    [("click", 30 * SEC, None)],  # positive
    [],  # implicit negative
    [("click", 12 * MIN, None)],  # late positive before the seal: revises the negative
    [("click", 75 * MIN, None)],  # after the seal: too late
    [("purchase", 5 * MIN, None), ("return", 40 * MIN, None)],  # the return outranks the purchase
    [("click", MIN, None), ("rating", 2 * MIN, 1)],  # explicit beats behavioral
    [("rating", 20 * MIN, 5)],  # explicit after the window
    [("add_to_cart", -3 * SEC, None)],  # clock skew: stamped before its prediction
    [("thumbs", 9 * MIN, "down"), ("click", 9 * MIN + SEC, None)],
]


def records(base: datetime, prefix: str) -> list[tuple[datetime, str, dict[str, Any]]]:
    """Predictions 2 minutes apart and their events, in event-time order."""
    out: list[tuple[datetime, str, dict[str, Any]]] = []
    for i, feedback in enumerate(FEEDBACK * 3):
        served = base + i * 2 * MIN
        out.append((served, "prediction", {"prediction_id": f"{prefix}{i}", "served_at": served}))
        for j, (kind, offset, value) in enumerate(feedback):
            out.append(
                (
                    served + offset,
                    "event",
                    {
                        "prediction_id": f"{prefix}{i}",
                        "type": kind,
                        "occurred_at": served + offset,
                        "value": value,
                        "event_id": f"{prefix}{i}-{j}",
                    },
                )
            )
    return sorted(out, key=lambda r: r[0])


async def play(t: Timeline, base: datetime, prefix: str) -> dict[int, tuple[Any, str | None, str | None]]:
    recs = records(base, prefix)
    for _, what, body in recs:
        if what == "prediction":
            await t.predict(body["prediction_id"], body["served_at"])
        else:
            await t.event(**body)
    await t.advance_watermark(recs[-1][0] + timedelta(hours=2))
    labels = {}
    for i in range(len(FEEDBACK) * 3):
        label = await t.label(f"{prefix}{i}")
        labels[i] = (None, None, None) if label is None else (label["label"], label["label_kind"], label["status"])
    return labels


async def test_backfill_labels_like_live(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    # The backfill happens first, three days after the fact; the clock stands still meanwhile.
    clock.set(T0 - timedelta(hours=1))
    backfilled = await play(Timeline(client, runtime, clock, live=False), T0 - timedelta(days=3), "old-")
    live = await play(Timeline(client, runtime, clock, live=True), T0, "live-")

    assert backfilled == live
    assert all(status == "final" for _, _, status in live.values())
    kinds = {kind for _, kind, _ in live.values()}
    assert kinds == {"behavioral", "implicit_negative", "explicit"}
    assert live[2] == (1, "behavioral", "final")  # the fake negative was revised in both runs
    assert live[3] == (0, "implicit_negative", "final")  # the too-late click changed nothing


async def test_replaying_everything_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    t = Timeline(client, runtime, clock)
    first = await play(t, T0, "p")
    dataset = (await client.get("/v1/datasets/recsys")).text
    figures = await t.metrics()
    # The same records again, days later.
    clock.advance(timedelta(days=2))
    again = await play(Timeline(client, runtime, clock, live=False), T0, "p")
    assert again == first
    assert (await client.get("/v1/datasets/recsys")).text == dataset
    assert await t.metrics() == figures
