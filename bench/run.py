"""`make bench` / `make bench-quick`: run the scenarios, write bench/results.json and results.md."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from bench import ingest, joiner
from bench.data import workload
from bench.kafka_env import bench_env
from bench.report import Figure, write
from consumers.topics import ensure_topics


async def kafka_scenarios(n_predictions: int, n_batch: int, logs: Path) -> list[Figure]:
    work = workload(n_predictions)
    async with bench_env() as env:
        settings = env.settings()
        await ensure_topics(settings)
        figures = await asyncio.to_thread(ingest.kafka_scenario, settings, logs, n_batch)
        return figures + await joiner.scenario(env, work, logs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced sizes, a few minutes")
    args = parser.parse_args()
    sizes = (
        {"joiner_predictions": 50_000, "batch": 20_000, "single": 1_000}
        if args.quick
        else {
            "joiner_predictions": 500_000,
            "batch": 100_000,
            "single": 5_000,
        }
    )
    with tempfile.TemporaryDirectory(prefix="labelloop-bench-") as tmp:
        work = Path(tmp)
        print(f"logs and scratch files in {work}")
        figures = ingest.scenario(work, sizes["batch"], sizes["single"])
        figures += asyncio.run(kafka_scenarios(sizes["joiner_predictions"], sizes["batch"], work))
    write(figures, quick=args.quick)


if __name__ == "__main__":
    main()
