"""Load for the freshness scenarios, run as its own process: bounded in count and time, loopback.

`clicks`: post rate x seconds recsys predictions (batches of 1,000, served_at = now), print
`posted`, wait for `go` on stdin, then post one click per prediction (occurred_at = now) at the
target rate, one batch every --tick seconds, and write for each batch the wall time (time.time())
its 202 arrived.

`predictions`: post n recsys predictions (served_at = now) spread evenly over --spread seconds,
one batch every --tick seconds, and write each batch's send and 202 wall times.

Both write JSON to --out and print `done` last.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

IN_FLIGHT = 32  # most requests outstanding at once; beyond that the schedule slips (and shows it)


def _now_text() -> str:
    return datetime.now(UTC).isoformat()


def prediction_id(run: str, i: int) -> str:
    return f"{run}-p{i:07d}"


def _predictions_body(run: str, start: int, count: int, served_at: str) -> bytes:
    return orjson.dumps(
        {
            "predictions": [
                {
                    "prediction_id": prediction_id(run, i),
                    "use_case": "recsys",
                    "model": "ranker",
                    "model_version": "7",
                    "served_at": served_at,
                    "features": {"position": i % 10},
                    "output": {"score": 0.5},
                }
                for i in range(start, start + count)
            ]
        }
    )


def _events_body(run: str, start: int, count: int, occurred_at: str) -> bytes:
    return orjson.dumps(
        {
            "events": [
                {
                    "event_id": f"{run}-e{i:07d}",
                    "prediction_id": prediction_id(run, i),
                    "type": "click",
                    "occurred_at": occurred_at,
                    "actor": f"user:{i % 997}",
                }
                for i in range(start, start + count)
            ]
        }
    )


async def _post(client: httpx.AsyncClient, path: str, body: bytes) -> int:
    response = await client.post(path, content=body, headers={"content-type": "application/json"})
    if response.status_code != 202:
        sys.stderr.write(f"{path}: {response.status_code} {response.text[:300]}\n")
    return response.status_code


async def _paced(
    client: httpx.AsyncClient, path: str, batches: list[tuple[int, int]], tick: float, body: Any
) -> list[list[Any]]:
    """One batch every `tick` seconds (open loop, at most IN_FLIGHT outstanding); per batch:
    [start, count, event time sent, sent at, 202 at, status]."""
    results: list[list[Any]] = []
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(start: int, count: int) -> None:
        try:
            stamp = _now_text()
            sent = time.time()
            status = await _post(client, path, body(start, count, stamp))
            results.append([start, count, stamp, sent, time.time(), status])
        finally:
            gate.release()

    tasks = []
    origin = time.monotonic()
    for k, (start, count) in enumerate(batches):
        delay = origin + k * tick - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        tasks.append(asyncio.create_task(one(start, count)))
    await asyncio.gather(*tasks)
    return sorted(results)


def _split(total: int, per_batch: int) -> list[tuple[int, int]]:
    return [(start, min(per_batch, total - start)) for start in range(0, total, per_batch)]


async def clicks(url: str, run: str, rate: int, seconds: float, tick: float) -> dict[str, Any]:
    total = int(rate * seconds)
    per_batch = max(1, round(rate * tick))
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(4)

        async def predictions(start: int, count: int) -> int:
            async with gate:
                return await _post(client, "/v1/predictions", _predictions_body(run, start, count, _now_text()))

        statuses = await asyncio.gather(*(predictions(s, c) for s, c in _split(total, 1000)))
        if any(s != 202 for s in statuses):
            raise RuntimeError(f"predictions rejected: {sorted(set(statuses))}")
        print("posted", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        if line.strip() != "go":
            raise RuntimeError(f"expected 'go', got {line!r}")
        batches = await _paced(
            client, "/v1/events", _split(total, per_batch), tick, lambda s, c, t: _events_body(run, s, c, t)
        )
    return {"predictions": total, "batches": batches}


async def spread(url: str, run: str, n: int, seconds: float, tick: float) -> dict[str, Any]:
    count = max(1, round(seconds / tick))
    per_batch = max(1, -(-n // count))
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        batches = await _paced(
            client, "/v1/predictions", _split(n, per_batch), tick, lambda s, c, t: _predictions_body(run, s, c, t)
        )
    return {"predictions": n, "batches": batches}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("mode", choices=["clicks", "predictions"])
    parser.add_argument("--run", required=True, help="prefix of every id")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rate", type=int, default=500, help="clicks: events per second")
    parser.add_argument("--seconds", type=float, default=15, help="clicks: duration; predictions: spread")
    parser.add_argument("--n", type=int, default=500, help="predictions: how many")
    parser.add_argument("--tick", type=float, default=0.05, help="seconds between batches")
    args = parser.parse_args()
    if not args.url.startswith(("http://127.0.0.1:", "http://localhost:")):
        parser.error("loopback only")
    if args.mode == "clicks":
        result = asyncio.run(clicks(args.url, args.run, args.rate, args.seconds, args.tick))
    else:
        result = asyncio.run(spread(args.url, args.run, args.n, args.seconds, args.tick))
    args.out.write_bytes(orjson.dumps(result))
    print("done", flush=True)


if __name__ == "__main__":
    main()
