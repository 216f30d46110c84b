"""`make bench` / `make bench-quick`: run the scenarios, write bench/results.json and results.md."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import export, freshness, ingest, joiner, memory, metrics_latency, peers, quality_latency, relabel
from bench.data import workload
from bench.kafka_env import bench_env
from bench.report import Figure, write
from service.kafka.topics import ensure_topics


@dataclass(frozen=True)
class Sizes:
    joiner_predictions: int  # each with one event: twice as many records
    batch: int  # records per collection in the HTTP batch ingest
    single: int  # single-record requests
    export: list[int]  # dataset rows, two sizes to show memory does not grow
    metrics_events: int  # also the labeled events of the model-quality scenario
    fresh_rate: int  # events/s for the freshness runs
    fresh_seconds: int
    peers_predictions: int  # 0: no peers (the quick run leaves them out: minutes of start-up)
    open_windows: int  # fraud predictions posted to watch the embedded writer's memory
    relabel: int  # stored predictions relabeled under a longer window


QUICK = Sizes(25_000, 10_000, 3_000, [50_000, 250_000], 500_000, 500, 10, 0, 200_000, 20_000)
FULL = Sizes(500_000, 100_000, 20_000, [1_000_000, 5_000_000], 10_000_000, 2_000, 60, 200_000, 1_000_000, 200_000)


async def kafka_scenarios(sizes: Sizes, logs: Path, bare: dict[str, float]) -> list[Figure]:
    async with bench_env() as env:
        figures = await asyncio.to_thread(
            ingest.postgres_scenario, env.settings(kafka_bootstrap_servers=None), logs, bare, sizes.single
        )
        settings = env.settings()
        await ensure_topics(settings)
        figures += await asyncio.to_thread(ingest.kafka_scenario, settings, logs, sizes.batch, bare, sizes.single)
        figures += await joiner.scenario(env, workload(sizes.joiner_predictions), logs)
        if sizes.peers_predictions:
            figures += await peers.scenario(env, workload(sizes.peers_predictions), logs)
        # These truncate the store: after the joiner scenario.
        figures += await freshness.kafka_freshness(env, logs, sizes.fresh_rate, sizes.fresh_seconds)
        figures += await freshness.kafka_negative_timeliness(env, logs)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced sizes, a few minutes")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="labelloop-bench-") as tmp:
        work = Path(tmp)
        print(f"logs and scratch files in {work}", flush=True)
        figures, bare = ingest.scenario(work, sizes.batch, sizes.single)
        figures += memory.scenario(work, sizes.open_windows)
        figures += asyncio.run(freshness.embedded_freshness(work, sizes.fresh_rate, sizes.fresh_seconds))
        figures += asyncio.run(freshness.negative_timeliness(work))
        figures += export.scenario(work, sizes.export)
        figures += metrics_latency.scenario(work, sizes.metrics_events)
        figures += relabel.scenario(work, sizes.relabel)
        figures += quality_latency.scenario(work, sizes.metrics_events)
        figures += asyncio.run(kafka_scenarios(sizes, work, bare))
    write(figures, quick=args.quick)


if __name__ == "__main__":
    main()
