"""`labelloop relabel USE_CASE`: the stored labels recomputed under the policy file in force, straight
on the store (service/store/relabel.py), with a progress line and a report (tables or --json)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.config import Settings
from service.core.policy import PolicySet
from service.core.relabeling import RelabelReport
from service.store.database import Database, create_engine
from service.store.ingest import LabelContext
from service.store.lease import WriterConflict, writer_lease
from service.store.relabel import relabel


def _table(title: str, counted: str, counts: Counter[tuple[str, str]]) -> Table:
    table = Table(title=title)
    table.add_column("from")
    table.add_column("to")
    table.add_column(counted, justify="right")
    for (old, new), n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(old, new, f"{n:,}")
    return table


def _print(console: Console, use_case: str, report: RelabelReport, dry_run: bool, digest: str) -> None:
    console.print(f"{use_case} under policy {digest}: {report.scanned:,} predictions read")
    console.print(
        f"{'would be ' if dry_run else ''}revised: {report.revised:,} labels, {report.status_only:,} statuses only "
        f"(final <-> provisional); windows moved: {report.rescheduled:,}; still open, left to the live path: "
        f"{report.open:,}"
    )
    if report.kept:
        console.print(
            f"kept: {report.kept:,} labels the new policy's events no longer give (labels are never withdrawn)"
        )
    if report.labels:
        console.print(_table("labels (old -> new)", "predictions", report.labels))
        console.print(_table("rules (old -> new)", "predictions", report.rules))
    if report.events:
        console.print(_table("events (old use -> new)", "events", report.events))
    if dry_run:
        console.print("dry run: nothing written")


async def _run(settings: Settings, ctx: LabelContext, args: argparse.Namespace, console: Console) -> RelabelReport:
    engine = create_engine(settings.database_url, "labelloop-relabel", settings.timeouts)
    db = Database(engine)
    columns = SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(f"{args.use_case}: 0 predictions")

            def step(done: RelabelReport) -> None:
                bar.update(task, description=f"{args.use_case}: {done.scanned:,} predictions, {done.revised:,} revised")

            def start() -> Coroutine[Any, Any, RelabelReport]:
                return relabel(
                    db,
                    ctx,
                    args.use_case,
                    kafka_topics=settings.kafka_topics,
                    served_from=args.served_from,
                    batch=args.batch,
                    dry_run=args.dry_run,
                    progress=step,
                )

            if args.dry_run:
                return await start()
            # Shared, as Kafka joiners hold it, who lock rows as a batch here does; an embedded
            # `serve` holds it exclusively: it keeps open predictions' labels in memory.
            async with writer_lease(engine, exclusive=False):
                return await start()
    finally:
        await db.dispose()


def run_relabel(settings: Settings, policies: PolicySet, args: argparse.Namespace) -> int:
    if args.use_case not in policies.use_cases:
        known = sorted(policies.use_cases)
        print(f"labelloop relabel: unknown use case {args.use_case!r}; known: {known}", file=sys.stderr)
        return 2
    progress = Console(stderr=True)
    try:
        report = asyncio.run(_run(settings, LabelContext.from_settings(settings, policies), args, progress))
    except WriterConflict as exc:
        print(f"labelloop relabel: {exc}. Stop `labelloop serve` first.", file=sys.stderr)
        return 2
    digest = policies.use_cases[args.use_case].digest
    if args.json:
        print(json.dumps({"use_case": args.use_case, "policy": digest, "dry_run": args.dry_run, **report.as_json()}))
    else:
        console = Console() if sys.stdout.isatty() else Console(width=120)  # a log: no 80-column squeeze
        _print(console, args.use_case, report, args.dry_run, digest)
    return 0
