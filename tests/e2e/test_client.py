"""The Python client (service/client) against a live `labelloop serve` process: batching by size and
by time, refused records set aside, retries through a 503 of the store and a cut connection,
datasets pulled incrementally and resumed midway, into pandas and Arrow."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.client import AsyncClient, Client, Retry, Undelivered
from tests.conftest import PG_ADMIN_DSN
from tests.e2e._process import Server, serve
from tests.tcp_proxy import TcpProxy

NOW = datetime.now(UTC)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serve(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'labelloop.db'}") as server:
        yield server


def requests_to(server: Server, route: str) -> int:
    """POSTs to a route, from the server's JSON access log."""
    lines = (server.stdout.read_text() + server.stderr.read_text()).splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return sum(1 for r in records if r.get("method") == "POST" and r.get("route") == route)


def predictions(n: int, prefix: str = "P", **fields: Any) -> list[dict[str, Any]]:
    served = NOW - timedelta(seconds=30)
    return [{"prediction_id": f"{prefix}{i}", "use_case": "recsys", "served_at": served, **fields} for i in range(n)]


def clicks(ids: list[str]) -> list[dict[str, Any]]:
    return [{"event_id": f"click-{pid}", "prediction_id": pid, "type": "click", "occurred_at": NOW} for pid in ids]


def test_batches_by_size_and_stores_each_record_once(server: Server) -> None:
    with Client(server.base_url, batch_size=50, flush_interval=60) as client:
        client.log_predictions(predictions(120))
        for pid in (f"P{i}" for i in range(120)):
            client.log_event(f"click-{pid}", pid, "click", occurred_at=NOW, actor="user:1")
        client.flush()
        client.log_predictions(predictions(120))  # a retry of everything: duplicates, nothing new
        client.flush()
        rows = client.iter_dataset("recsys").rows()
    assert sorted(r["prediction_id"] for r in rows) == sorted(f"P{i}" for i in range(120))
    assert {(r["label"], r["label_kind"]) for r in rows} == {(1, "behavioral")}
    assert requests_to(server, "/v1/predictions") == 3 + 3  # 50 + 50 + 20, twice
    assert requests_to(server, "/v1/events") == 3


def test_sends_in_the_background_after_the_flush_interval(server: Server) -> None:
    with Client(server.base_url, flush_interval=0.2) as client:
        client.log_prediction("B1", "recsys", model="ranker", features={"position": 1})
        deadline = time.monotonic() + 10
        while (status := httpx.get(f"{server.base_url}/v1/predictions/B1").status_code) != 200:
            assert time.monotonic() < deadline, f"not sent in the background (last status {status})"
            time.sleep(0.1)
    stored = httpx.get(f"{server.base_url}/v1/predictions/B1").json()["prediction"]
    assert (stored["model"], stored["features"]) == ("ranker", {"position": 1})


def test_refused_records_are_set_aside_and_the_rest_delivered(server: Server) -> None:
    client = Client(server.base_url)
    client.log_predictions(predictions(3, prefix="R"))
    client.log_events([*clicks(["R0", "R1"]), {"event_id": "bad", "prediction_id": "R2", "type": "clack"}])
    with pytest.raises(Undelivered) as refused:
        client.close()
    assert [(r.kind, r.record["event_id"]) for r in refused.value.rejected] == [("events", "bad")]
    assert "type" in refused.value.rejected[0].reason
    assert refused.value.failing == 0
    labels = {pid: httpx.get(f"{server.base_url}/v1/predictions/{pid}").json()["label"] for pid in ("R0", "R1", "R2")}
    assert {pid: label and label["label"] for pid, label in labels.items()} == {"R0": 1, "R1": 1, "R2": None}


def test_incremental_pulls_into_pandas_and_arrow(server: Server) -> None:
    with Client(server.base_url) as client:
        client.log_predictions(predictions(10, prefix="D", features={"position": 3}))
        client.log_events(clicks([f"D{i}" for i in range(6)]))
        client.flush()
        first = client.iter_dataset("recsys")
        frame = first.to_pandas()
        assert len(frame) == 6
        assert str(frame["served_at"].dt.tz) == "UTC"
        assert frame["seq"].max() == first.last_seq
        client.send_events(clicks([f"D{i}" for i in range(6, 9)]))
        later = client.iter_dataset("recsys", since=first.last_seq)
        table = later.to_arrow()
        assert sorted(table.column("prediction_id").to_pylist()) == ["D6", "D7", "D8"]
        assert table.schema.field("label").type == "double"
        assert json.loads(table.column("features")[0].as_py()) == {"position": 3}
        assert later.last_seq == first.last_seq + 3
        assert client.iter_dataset("recsys", since=later.last_seq).rows() == []


@pytest.fixture
async def proxied_server(tmp_path: Path) -> AsyncIterator[tuple[Server, TcpProxy]]:
    """A server on a PostgreSQL database of its own, reached through a proxy the test cuts."""
    name = f"labelloop_client_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    url = base.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}") + f"/{name}"
    try:
        # serve() waits for health in this thread; the proxy needs this loop meanwhile.
        context = serve(tmp_path, database_url=url, migrate_on_start="true", db_connect_timeout="1s")
        server = await asyncio.to_thread(context.__enter__)
        try:
            yield server, proxy
        finally:
            proxy.restore()
            await asyncio.to_thread(context.__exit__, None, None, None)
    finally:
        await proxy.stop()
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.postgres
async def test_retries_through_a_store_outage(proxied_server: tuple[Server, TcpProxy]) -> None:
    server, proxy = proxied_server
    async with AsyncClient(server.base_url, retry=Retry(attempts=20, base=0.2, cap=1.0)) as client:
        proxy.cut()
        sending = asyncio.create_task(client.send_predictions(predictions(5, prefix="O")))
        await asyncio.sleep(2.0)  # long enough for 503s: the store is refused within its 1 s connect timeout
        assert not sending.done()
        proxy.restore()
        receipt = await asyncio.wait_for(sending, 30)
        assert (receipt.accepted, receipt.duplicates) == (5, 0)
        figures = await client.get("/v1/metrics/feedback-loop", use_case="recsys")
    assert figures["use_cases"]["recsys"]["served"] == 5
    log = server.stdout.read_text() + server.stderr.read_text()
    assert '"status": 503' in log or '"status":503' in log  # the client did meet the 503s


async def test_a_stream_cut_midway_resumes_from_the_last_seq(server: Server) -> None:
    count = 600
    bulky = {"text": "x" * 30_000}  # 18 MB in all: far more than socket buffers hold
    async with AsyncClient(server.base_url, batch_size=100) as client:
        await client.log_predictions(predictions(count, prefix="S", features=bulky))
        await client.log_events(clicks([f"S{i}" for i in range(count)]))
        await client.flush()
    host, port = server.base_url.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    try:
        async with AsyncClient(f"http://127.0.0.1:{proxy.port}", retry=Retry(attempts=10, base=0.1)) as client:
            stream = client.iter_dataset("recsys")
            seen: list[int] = []
            async for row in stream:
                seen.append(row["seq"])
                if len(seen) == 50:
                    proxy.cut()
                    asyncio.get_running_loop().call_later(0.5, proxy.restore)
    finally:
        await proxy.stop()
    assert proxy.accepted >= 2  # the stream really broke off and was opened again
    assert seen == sorted(set(seen))  # in seq order, none twice
    assert len(seen) == count
    assert stream.last_seq == seen[-1]
