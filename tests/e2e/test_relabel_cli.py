"""`labelloop relabel` on SQLite and PostgreSQL: a history ingested under policy A, relabeled under
policy B by the installed command, must hold exactly the labels a fresh ingest of the same records
under B gives (the known truth), with lineage from the old rule to the new and new dataset seqs."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.api.runtime import Runtime
from service.core.policy import BUNDLED_POLICIES, load_policies
from service.core.quality import SUMS
from service.store.tables import events, label_history, metadata, predictions, quality_sums, stat_counters
from tests.conftest import FakeClock, settings_for
from tests.e2e.test_cli import run_cli

NOW = datetime.now(UTC).replace(microsecond=0)
D = NOW - timedelta(days=2)  # the old predictions: served within a minute, two days ago
MIN = timedelta(minutes=1)
OLD_IDS = ("fast", "none", "late-2h", "late-4h", "share", "return", "arrival", "erased")
A_WINDOW_RULE = "window 0:10:00 closed with no positive: implicit negative"
B_WINDOW_RULE = "window 0:30:00 closed with no positive: implicit negative"


def policy_files(tmp_path: Path) -> tuple[Path, Path]:
    """A: the bundled recsys (10 min window, 1 h lateness), `share` known to another use case
    only; B: a 30 min window, 3 h lateness, and `share` a positive for recsys too."""
    a = yaml.safe_load(BUNDLED_POLICIES.read_text())
    a["use_cases"]["social"] = {"task": "binary", "window": "1h", "events": {"share": {"kind": "positive"}}}
    b = yaml.safe_load(yaml.safe_dump(a))
    recsys = b["use_cases"]["recsys"]
    recsys.update(window="30m", allowed_lateness="3h")
    recsys["events"]["share"] = {"kind": "positive", "rank": 0}
    paths = tmp_path / "a.yaml", tmp_path / "b.yaml"
    for path, policy in zip(paths, (a, b), strict=True):
        path.write_text(yaml.safe_dump(policy))
    return paths


@asynccontextmanager
async def serving(url: str, policies: Path, clock: FakeClock) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    app = create_app(settings_for(url, policies=policies), clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://labelloop.test") as client:
            yield client, app.state.runtime


async def post(client: httpx.AsyncClient, path: str, records: list[dict[str, Any]]) -> None:
    key = path.rsplit("/", 1)[1]
    response = await client.post(path, json={key: records})
    assert response.status_code == 202, response.text


def event(pid: str, type: str, at: datetime) -> dict[str, Any]:
    return {"event_id": f"{pid}-{type}", "prediction_id": pid, "type": type, "occurred_at": at.isoformat()}


async def ingest(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    """The same records, in the same order, whichever the policy: a backfill of two days ago, then
    a recent prediction, a click arriving once its label was final, an erasure, a quiet stream."""
    served = {pid: D + timedelta(seconds=i) for i, pid in enumerate(OLD_IDS)}
    await post(client, "/v1/events", [event("share", "share", served["share"] + MIN)])  # before its prediction
    await post(
        client,
        "/v1/predictions",
        [
            {"prediction_id": pid, "use_case": "recsys", "served_at": at.isoformat(), "subject_id": pid}
            | ({} if pid == "erased" else {"output": {"score": round(0.1 + 0.1 * i, 1)}})  # scored: model quality
            for i, (pid, at) in enumerate(served.items())
        ],
    )
    await post(
        client,
        "/v1/events",
        [
            event("fast", "click", served["fast"] + 5 * MIN),
            event("late-2h", "click", served["late-2h"] + 120 * MIN),  # after A's seal, before B's
            event("late-4h", "click", served["late-4h"] + 240 * MIN),  # after both
            event("return", "purchase", served["return"] + 5 * MIN),
            event("return", "return", served["return"] + 90 * MIN),  # after A's seal, before B's
            event("erased", "click", served["erased"] + 5 * MIN),
        ],
    )
    recent = {"prediction_id": "recent", "use_case": "recsys", "served_at": (NOW - 15 * MIN).isoformat()}
    await post(client, "/v1/predictions", [recent])  # A's window has closed by now, B's has not
    await post(client, "/v1/events", [event("arrival", "click", served["arrival"] + 30 * MIN)])
    assert (await runtime.erase_subject("erased", by="test")).predictions == 1
    clock.advance(runtime.settings.idle_timeout + timedelta(seconds=1))
    await runtime.tick()


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        preds = {r.prediction_id: r._asdict() for r in await conn.execute(select(predictions))}
        evs = {r.event_id: (r.disposition, r.reason) for r in await conn.execute(select(events))}
        history = [r._asdict() for r in await conn.execute(select(label_history).order_by(label_history.c.id))]
        counters: Counter[tuple[str, str]] = Counter()
        for r in await conn.execute(select(stat_counters).where(stat_counters.c.use_case == "recsys")):
            counters[(r.name, r.event_type)] += r.value
        sums = {
            (r.bucket, r.period, r.status): tuple(round(r._mapping[name], 9) for name in SUMS)
            for r in await conn.execute(select(quality_sums).where(quality_sums.c.use_case == "recsys"))
            if r.count
        }
    return {"predictions": preds, "events": evs, "history": history, "counters": counters, "quality": sums}


LABEL = ("label", "label_kind", "label_rule", "label_sources", "label_status", "feedback_delay_s")
WHEN = ("phase", "window_end", "seal_at", "deadline")


def labels(state: dict[str, Any], *, columns: tuple[str, ...] = LABEL + WHEN) -> dict[str, tuple[Any, ...]]:
    return {pid: tuple(p[c] for c in columns) for pid, p in state["predictions"].items()}


async def truncate(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(table.delete())


async def test_relabel_gives_the_labels_a_fresh_ingest_under_the_new_policy_gives(
    tmp_path: Path, engine: AsyncEngine, migrated_url: str
) -> None:
    policy_a, policy_b = policy_files(tmp_path)
    digest_a, digest_b = (load_policies(p).use_cases["recsys"].digest for p in (policy_a, policy_b))
    env = {"database_url": migrated_url, "policies": str(policy_b)}
    clock = FakeClock(NOW)
    async with serving(migrated_url, policy_a, clock) as (client, runtime):
        await ingest(client, runtime, clock)
        busy = await run_cli("relabel", "recsys", cwd=tmp_path, **env)
        assert busy.returncode == 2, busy.stdout + busy.stderr  # the embedded writer holds its lease
        assert "Stop `labelloop serve` first" in busy.stderr
    under_a = await snapshot(engine)
    assert under_a["predictions"]["late-2h"]["label_rule"] == A_WINDOW_RULE

    dry = await run_cli("relabel", "recsys", "--dry-run", "--json", cwd=tmp_path, **env)
    assert dry.returncode == 0, dry.stderr
    assert await snapshot(engine) == under_a  # nothing written
    expected = {
        "use_case": "recsys",
        "policy": digest_b,
        "scanned": 8,  # the erased prediction is never read
        "revised": 6,  # all but `fast` (same click) and `recent` (open under B)
        "status_only": 0,
        "rescheduled": 8,
        "open": 1,
        "labels": [
            {"from": "0", "to": "0", "count": 3},
            {"from": "0", "to": "1", "count": 2},
            {"from": "1", "to": "0", "count": 1},
        ],
        "events": [
            {"from": "invalid", "to": "counted", "count": 1},
            {"from": "too_late", "to": "counted", "count": 2},
        ],
    }
    report = json.loads(dry.stdout)
    assert {k: v for k, v in report.items() if k in expected} == {**expected}
    assert report["dry_run"] is True
    assert {"from": A_WINDOW_RULE, "to": "events.click: positive, rank 0", "count": 1} in report["rules"]
    assert {"from": A_WINDOW_RULE, "to": B_WINDOW_RULE, "count": 3} in report["rules"]
    recent_only = await run_cli(
        "relabel", "recsys", "--dry-run", "--json", "--served-from", (NOW - 20 * MIN).isoformat(), cwd=tmp_path, **env
    )
    assert json.loads(recent_only.stdout)["scanned"] == 1

    shown = await run_cli("relabel", "recsys", "--dry-run", cwd=tmp_path, **env)
    assert "would be revised: 6 labels" in shown.stdout
    assert "dry run: nothing written" in shown.stdout
    done = await run_cli("relabel", "recsys", "--json", "--batch", "3", cwd=tmp_path, **env)  # three batches
    assert done.returncode == 0, done.stderr
    assert {**json.loads(done.stdout), "dry_run": True} == report
    relabeled = await snapshot(engine)
    table = await run_cli("relabel", "recsys", cwd=tmp_path, **env)
    assert table.returncode == 0, table.stderr
    assert "8 predictions read\nrevised: 0 labels" in table.stdout  # the same policy again: no change
    assert await snapshot(engine) == relabeled

    seq_before = max(h["seq"] for h in under_a["history"])
    async with serving(migrated_url, policy_b, clock) as (client, runtime):
        lineage = (await client.get("/v1/predictions/late-2h")).json()
        old, new = lineage["history"][-2:]
        assert (old["rule"], old["policy"], old["label"]) == (A_WINDOW_RULE, digest_a, 0)
        assert (new["rule"], new["policy"], new["label"]) == ("events.click: positive, rank 0", digest_b, 1)
        assert new["seq"] > seq_before
        assert new["revision"] == old["revision"] + 1
        stream = await client.get("/v1/datasets/recsys", params={"since": seq_before})
        assert stream.headers["X-Labelloop-Policy"] == digest_b
        rows = [json.loads(line) for line in stream.text.splitlines()]
        assert sorted(r["prediction_id"] for r in rows) == ["arrival", "late-2h", "late-4h", "none", "return", "share"]
        assert sorted(r["seq"] for r in rows) == list(range(seq_before + 1, seq_before + 7))
        clock.set(NOW + 31 * MIN)  # B's window of `recent` closes: the live path decides it
        await runtime.tick()
    after_live = await snapshot(engine)

    await truncate(engine)
    clock = FakeClock(NOW)
    async with serving(migrated_url, policy_b, clock) as (client, runtime):
        await ingest(client, runtime, clock)
        fresh = await snapshot(engine)
        clock.set(NOW + 31 * MIN)
        await runtime.tick()
    fresh_later = await snapshot(engine)

    truth, got = labels(fresh), labels(relabeled)
    assert got.pop("recent")[:3] == (0, "implicit_negative", A_WINDOW_RULE)  # kept while B's window is open
    assert truth.pop("recent")[:3] == (None, None, None)
    assert got.pop("erased") == labels(under_a)["erased"]  # skipped: its tombstone as it was
    assert truth.pop("erased")[4] == "erased"
    assert got == truth
    assert labels(relabeled, columns=WHEN)["recent"] == labels(fresh, columns=WHEN)["recent"]
    assert relabeled["events"] == fresh["events"]
    assert {**labels(after_live), "erased": None} == {**labels(fresh_later), "erased": None}
    assert after_live["predictions"]["recent"]["label_rule"] == B_WINDOW_RULE
    moved = ("labels_implicit_negative", "labels_behavioral", "events", "too_late", "invalid_events", "finalized")
    assert {k: v for k, v in after_live["counters"].items() if k[0] in moved and v} == {
        k: v for k, v in fresh_later["counters"].items() if k[0] in moved and v
    }
    assert after_live["quality"] == fresh_later["quality"]  # model quality moved with the labels
    assert after_live["quality"] != under_a["quality"]


async def test_relabel_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    unknown = await run_cli("relabel", "recommendations", cwd=tmp_path, database_url="sqlite+aiosqlite:///x.db")
    assert unknown.returncode == 2
    assert "unknown use case 'recommendations'" in unknown.stderr
    naive = await run_cli("relabel", "recsys", "--served-from", "2026-11-01T00:00:00", cwd=tmp_path)
    assert naive.returncode == 2
    assert "--served-from: needs a UTC offset" in naive.stderr
    batch = await run_cli("relabel", "recsys", "--batch", "0", cwd=tmp_path)
    assert batch.returncode == 2
    assert "--batch: must be between 1 and 100000" in batch.stderr
    assert not (tmp_path / "x.db").exists()  # refused before the store was opened
