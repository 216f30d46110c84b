"""Poison messages go to the dead-letter topic, unchanged, with a reason; the valid records around
them (before and after, in the same partitions) are still labeled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.kafka.topics import ensure_topics
from tests.kafka.conftest import running_joiner
from tests.kafka.processes import (
    Outgoing,
    click,
    final_label_mix,
    header,
    keyed,
    plain_producer,
    prediction,
    read_topic,
    scalar,
    send,
    wait_until,
)


def body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


async def test_poison_messages_are_dead_lettered_and_consumption_continues(
    kafka_settings: Settings, kafka_client: httpx.AsyncClient, pg_engine: AsyncEngine
) -> None:
    s = kafka_settings
    bootstrap = s.kafka_bootstrap_servers or ""
    now = datetime.now(UTC)
    at = now.isoformat()
    later = (now + timedelta(milliseconds=500)).isoformat()
    # Every poison message shares its key with valid records (so its partition too): V<key>-a
    # before it, V<key>-b after it. (message, topic, the reason the dead letter must name)
    poison: dict[str, tuple[bytes, str, str]] = {
        "K1": (b"{this is not json", "predictions", "not valid JSON"),
        "K2": (b'[{"prediction_id": "K2", "use_case": "recsys"}]', "predictions", "must be a JSON object"),
        "K3": (
            body(schema_version=2, prediction_id="K3", use_case="recsys", served_at=at),
            "predictions",
            "schema_version 2 is not supported",
        ),
        "K4": (body(prediction_id="K4", use_case="nope", served_at=at), "predictions", "unknown use case 'nope'"),
        "K5": (body(prediction_id="K5", served_at=at), "predictions", "use_case: Field required"),
        "K6": (
            body(event_id="E-K6", prediction_id="K6", type="clack", occurred_at=later),
            "events",
            "unknown event type 'clack'",
        ),
        "K7": (
            body(event_id="E-K7", prediction_id="K7", type="click", occurred_at=1700000000),
            "events",
            "occurred_at",
        ),
        # Hostile: what a lenient parser would change, or a store could not hold.
        "K8": (b'{"prediction_id": "K8", "use_case": "recsys", "model": "\xff"}', "predictions", "not UTF-8"),
        "K9": (b'{"prediction_id": "K9", "use_case": "recsys", "use_case": "eta"}', "predictions", "duplicate key"),
        "K10": (
            b'{"prediction_id": "K10", "use_case": "recsys", "features": {"n": 18446744073709551616}}',
            "predictions",
            "beyond 64 bits",
        ),
        "K11": (body(prediction_id="K11", use_case="recsys", features={"s": "a\x00"}), "predictions", "NUL"),
        "K12": (
            body(prediction_id="K12", use_case="recsys", features={"big": ["x" * 60_000] * 5}),
            "predictions",
            "bytes as JSON",
        ),
        "K13": (
            b'{"prediction_id": "K13", "use_case": "recsys", "features": ' + b'{"a":' * 40 + b"1" + b"}" * 41,
            "predictions",
            "deeper than 32",
        ),
    }
    # Poison only once their prediction is stored: judged against that prediction's use case and
    # content. T: an event type of another use case (eta); R: a prediction_id re-used with other
    # content; C: an event_id re-used with other content.
    after_stored: dict[str, tuple[bytes, str, str]] = {
        "T": (
            body(event_id="E-T-trip", prediction_id="T", type="trip_completed", occurred_at=later, value=900),
            "events",
            "unknown event type 'trip_completed' for use case 'recsys'",
        ),
        "R": (
            body(prediction_id="R", use_case="recsys", served_at=at, model="other"),
            "predictions",
            "prediction_id R already stored with different content",
        ),
        "C": (
            body(event_id="E-C", prediction_id="C", type="click", occurred_at=later, actor="user:someone-else"),
            "events",
            "event_id E-C already stored with different content",
        ),
    }
    topic = {"predictions": s.kafka_predictions_topic, "events": s.kafka_events_topic}

    def valid(key: str, suffix: str) -> tuple[list[Outgoing], list[Outgoing]]:
        """A prediction keyed `key` and a click on it: (predictions, events) messages."""
        pid = f"V{key}-{suffix}"
        return (
            [(key.encode(), keyed([prediction(pid, now)])[0][1], None)],
            [(key.encode(), keyed([click(f"E-{pid}", pid, now + timedelta(milliseconds=500))])[0][1], None)],
        )

    sent: dict[str, Any] = {}  # key -> record metadata of its poison message

    async with plain_producer(bootstrap) as producer:
        originals = [prediction(p, now) for p in ("T", "R", "C")]
        await send(producer, s.kafka_predictions_topic, keyed(originals))
        await send(producer, s.kafka_events_topic, keyed([click("E-C", "C", now + timedelta(milliseconds=500))]))
        for key, (value, kind, _) in poison.items():
            before_p, before_e = valid(key, "a")
            after_p, after_e = valid(key, "b")
            await send(producer, s.kafka_predictions_topic, before_p)
            await send(producer, s.kafka_events_topic, before_e)
            sent[key] = (await send(producer, topic[kind], [(key.encode(), value, None)]))[0]
            await send(producer, s.kafka_predictions_topic, after_p)
            await send(producer, s.kafka_events_topic, after_e)

        async with running_joiner(s) as joiner:
            await wait_until(
                lambda: _count(pg_engine, "SELECT count(*) FROM events WHERE prediction_id = 'C'"), 30, "E-C stored"
            )
            for key, (value, kind, _) in after_stored.items():
                sent[key] = (await send(producer, topic[kind], [(key.encode(), value, None)]))[0]
                after_p, after_e = valid(key, "b")
                await send(producer, s.kafka_predictions_topic, after_p)
                await send(producer, s.kafka_events_topic, after_e)

            every = {**poison, **after_stored}
            dead = await read_topic(bootstrap, s.kafka_dlq_topic, len(every))
            valid_count = 2 * len(poison) + len(after_stored)  # V<key>-a and V<key>-b (only -b for the late ones)
            labeled = valid_count + len(originals)

            async def all_final() -> bool:
                final = await scalar(pg_engine, "SELECT count(*) FROM predictions WHERE label_status = 'final'")
                return final == labeled

            await wait_until(all_final, 30, "the valid predictions final")
            dead_letter_metric = joiner.metrics.registry.get_sample_value("labelloop_joiner_dead_letters_total")

    # Each poison message once, as it was sent, with the reason and where it came from.
    assert len(dead) == len(every)
    by_source = {header(m, "labelloop-source"): m for m in dead}
    for key, (value, _, reason) in every.items():
        meta = sent[key]
        message = by_source.get(f"{meta.topic}[{meta.partition}]@{meta.offset}")
        assert message is not None, f"{key}: no dead letter from {meta}: {sorted(map(str, by_source))}"
        assert message.value == value
        assert message.key == key.encode()
        assert reason in (header(message, "labelloop-reason") or ""), (key, header(message, "labelloop-reason"))

    # The valid records all around them were applied: every V*, and the originals of T, R and C.
    assert await scalar(pg_engine, "SELECT count(*) FROM predictions WHERE prediction_id LIKE 'V%'") == valid_count
    assert await final_label_mix(pg_engine) == {("behavioral", 1): valid_count + 1, ("implicit_negative", 0): 2}
    lineage_r = (await kafka_client.get("/v1/predictions/R")).json()
    assert lineage_r["prediction"]["model"] is None  # the original, not the re-use
    lineage_c = (await kafka_client.get("/v1/predictions/C")).json()
    assert [(e["event_id"], e["actor"]) for e in lineage_c["events"]] == [("E-C", None)]
    lineage_t = (await kafka_client.get("/v1/predictions/T")).json()
    assert lineage_t["events"] == []
    assert lineage_t["label"]["label_kind"] == "implicit_negative"
    assert await scalar(pg_engine, "SELECT count(*) FROM events WHERE prediction_id IN ('K6', 'K7')") == 0

    # Counted: the joiner's Prometheus counter, the feedback-loop figures and the API's /metrics.
    assert dead_letter_metric == len(every)
    figures = (await kafka_client.get("/v1/metrics/feedback-loop")).json()
    assert figures["dead_letters"] == len(every)
    assert figures["use_cases"]["recsys"]["served"] == labeled
    exposition = (await kafka_client.get("/metrics")).text
    assert f"labelloop_dead_letters {float(len(every))}" in exposition
    # The dashboard's pipeline read: the count and the latest ones with their reason.
    pipeline = (await kafka_client.get("/v1/metrics/pipeline")).json()
    assert pipeline["mode"] == "kafka"
    assert pipeline["dead_letters"] == len(every)
    recent = pipeline["recent_dead_letters"]
    assert len(recent) == min(len(every), 20)
    assert all(d["reason"] and d["topic"] for d in recent)


async def _count(engine: AsyncEngine, sql: str) -> int:
    n: int = await scalar(engine, sql)
    return n


async def test_id_reused_within_one_batch_keeps_the_first(kafka_settings: Settings, pg_engine: AsyncEngine) -> None:
    """Both messages sent before any joiner runs, so they meet in one batch: the first stands, as it
    would in different batches; the re-use is a dead letter; an identical repeat is a duplicate."""
    s = kafka_settings
    bootstrap = s.kafka_bootstrap_servers or ""
    now = datetime.now(UTC)
    first = body(prediction_id="Q", use_case="recsys", served_at=now.isoformat(), model="first")
    reuse = body(prediction_id="Q", use_case="recsys", served_at=now.isoformat(), model="second")
    await ensure_topics(s)
    async with plain_producer(bootstrap) as producer:
        await send(producer, s.kafka_predictions_topic, [(b"Q", first, None), (b"Q", reuse, None), (b"Q", first, None)])
    async with running_joiner(s):
        dead = await read_topic(bootstrap, s.kafka_dlq_topic, 1)
        await wait_until(lambda: _count(pg_engine, "SELECT count(*) FROM predictions"), 30, "Q stored")
    assert [m.value for m in dead] == [reuse]
    assert header(dead[0], "labelloop-reason") == "prediction_id Q re-used with different content"
    assert await scalar(pg_engine, "SELECT model FROM predictions WHERE prediction_id = 'Q'") == "first"
    assert await scalar(pg_engine, "SELECT count(*) FROM dead_letters") == 1
    assert await scalar(pg_engine, "SELECT sum(value) FROM stat_counters WHERE name = 'served'") == 1
