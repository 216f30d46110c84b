"""`labelloop simulate`: a client, the run with its progress bar, the summary (a table, or JSON)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys

from rich.console import Console

from service.client import AsyncClient, LabelloopError, Undelivered
from service.client._wire import env_settings
from service.simulate.report import Bar, render
from service.simulate.run import Summary, simulate
from service.simulate.scenarios import SCENARIOS


def run_simulate(
    scenario: str,
    *,
    rate: float,
    duration: float,
    grace: float,
    seed: int | None,
    url: str | None,
    as_json: bool,
) -> int:
    """0 once everything was delivered; 1 if records were refused or not delivered; 2 if the
    service cannot be reached."""
    settings = env_settings()
    url = url or settings["url"]
    seed = secrets.randbelow(2**31) if seed is None else seed  # printed, so the run can be repeated
    errors = Console(stderr=True)

    async def run() -> Summary | None:
        client = AsyncClient(url, settings["api_key"], flush_interval=0.25)
        try:
            try:
                await client.get("/healthz")
            except LabelloopError as exc:
                errors.print(f"labelloop simulate: cannot reach {url}: {exc}", markup=False, highlight=False)
                return None
            with Bar(duration, grace, errors) as bar:
                return await simulate(
                    SCENARIOS[scenario], client, rate=rate, duration=duration, grace=grace, seed=seed, progress=bar
                )
        finally:
            with contextlib.suppress(Undelivered):  # counted in the summary already
                await client.close()

    summary = asyncio.run(run())
    if summary is None:
        return 2
    if as_json:
        sys.stdout.write(json.dumps(summary.as_json(), indent=2) + "\n")
    else:
        render(summary, Console() if sys.stdout.isatty() else Console(width=120))  # a log: no 80-column squeeze
    return 1 if summary.sent.refused or summary.sent.undelivered else 0
