"""Load generator, run as its own process: bounded request counts on loopback; prints JSON.

aiohttp, not httpx: httpx's async client collapses under concurrency on this machine (125 requests/s
with 32 connections against a bare route that aiohttp drives at 2,800), so it would measure itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import aiohttp
import orjson

from bench.data import workload
from service.kafka.codec import encode


def bodies(kind: str, n: int, batch: int) -> list[bytes]:
    """Request bodies of `batch` records each, as the batch scenario posts them."""
    work = workload(n)
    records = work.predictions if kind == "predictions" else work.events
    items = [orjson.dumps({k: v for k, v in orjson.loads(encode(r)).items() if k != "schema_version"}) for r in records]
    return [b'{"%s":[' % kind.encode() + b",".join(items[i : i + batch]) + b"]}" for i in range(0, len(items), batch)]


def single_bodies(kind: str, n: int) -> list[bytes]:
    """One bare record per request."""
    prefix = len(b'{"%s":[' % kind.encode())
    return [b[prefix:-2] for b in bodies(kind, n, 1)]


async def drive(url: str, path: str, payloads: list[bytes | None], concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    queue = list(reversed(payloads))
    headers = {"content-type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            body = queue.pop()
            started = time.perf_counter()
            if body is None:
                response = await session.get(url + path)
            else:
                response = await session.post(url + path, data=body, headers=headers)
            async with response:
                text = await response.read()
            latencies.append(time.perf_counter() - started)
            if response.status >= 300:
                raise RuntimeError(f"{path}: {response.status} {text[:200]!r}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(payloads),
        "seconds": elapsed,
        "requests_per_s": len(payloads) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("mode", choices=["healthz", "single", "single-predictions", "batches"])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    result: dict[str, Any]
    if args.mode == "healthz":
        result = asyncio.run(drive(args.url, "/healthz", [None] * args.n, args.concurrency))
    elif args.mode == "single-predictions":
        posted: list[bytes | None] = list(single_bodies("predictions", args.n))
        result = asyncio.run(drive(args.url, "/v1/predictions", posted, args.concurrency))
    else:
        if args.mode == "single":
            predictions, events = single_bodies("predictions", args.n), single_bodies("events", args.n)
        else:
            predictions, events = bodies("predictions", args.n, args.batch), bodies("events", args.n, args.batch)
        first = asyncio.run(drive(args.url, "/v1/predictions", list(predictions), args.concurrency))
        second = asyncio.run(drive(args.url, "/v1/events", list(events), args.concurrency))
        result = {
            "predictions": first,
            "events": second,
            "records_per_s": 2 * args.n / (first["seconds"] + second["seconds"]),
        }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
