"""Load generator, run as its own process: bounded request counts on loopback; prints JSON."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import httpx
import orjson

from bench.data import workload
from consumers.codec import encode


def _bodies(kind: str, n: int, batch: int) -> list[bytes]:
    work = workload(n)
    records = work.predictions if kind == "predictions" else work.events
    items = [orjson.dumps({k: v for k, v in orjson.loads(encode(r)).items() if k != "schema_version"}) for r in records]
    return [b'{"%s":[' % kind.encode() + b",".join(items[i : i + batch]) + b"]}" for i in range(0, len(items), batch)]


async def _drive(url: str, path: str, bodies: list[bytes | None], concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    queue = list(enumerate(bodies))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            _, body = queue.pop()
            started = time.perf_counter()
            if body is None:
                response = await client.get(path)
            else:
                response = await client.post(path, content=body, headers={"content-type": "application/json"})
            latencies.append(time.perf_counter() - started)
            if response.status_code >= 300:
                raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(bodies),
        "seconds": elapsed,
        "requests_per_s": len(bodies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("mode", choices=["healthz", "single", "batches"])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    result: dict[str, Any]
    if args.mode == "healthz":
        result = asyncio.run(_drive(args.url, "/healthz", [None] * args.n, args.concurrency))
    else:
        batch = 1 if args.mode == "single" else args.batch
        predictions = _bodies("predictions", args.n, batch)
        events = _bodies("events", args.n, batch)
        if args.mode == "single":  # one record per request: send the bare object
            predictions = [b[len(b'{"predictions":[') : -2] for b in predictions]
            events = [b[len(b'{"events":[') : -2] for b in events]
        first = asyncio.run(_drive(args.url, "/v1/predictions", list(predictions), args.concurrency))
        second = asyncio.run(_drive(args.url, "/v1/events", list(events), args.concurrency))
        result = {
            "predictions": first,
            "events": second,
            "records_per_s": 2 * args.n / (first["seconds"] + second["seconds"]),
        }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
