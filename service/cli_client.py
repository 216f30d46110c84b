"""`labelloop export`, `advise` and `erase`: commands that are clients of a running API
(LABELLOOP_URL, LABELLOOP_API_KEY), through service.client."""

from __future__ import annotations

import argparse
import json
import sys
from urllib.parse import quote

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.client import Client, LabelloopError
from service.export import export


def run_export(args: argparse.Namespace) -> int:
    options = {"url": args.url} if args.url else {}
    with (
        Client.from_env(**options) as client,
        Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar,
    ):
        task = bar.add_task(f"{args.use_case}: 0 rows")
        try:
            rows, last_seq = export(
                client,
                args.use_case,
                args.format,
                args.output,
                since=args.since,
                final_only=args.final_only,
                progress=lambda n: bar.update(task, description=f"{args.use_case}: {n:,} rows"),
            )
        except LabelloopError as exc:
            print(f"labelloop export: {exc}", file=sys.stderr)
            return 1
    print(f"{rows} rows written to {args.output}; next time: --since {last_seq}")
    return 0


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}s"


def run_advise(args: argparse.Namespace) -> int:
    """The window advice of GET /v1/advice/window, as a table per event type."""
    options = {"url": args.url} if args.url else {}
    with Client.from_env(**options) as client:
        try:
            advice = client.get("/v1/advice/window", use_case=args.use_case, max_fake_negative_rate=args.target)
        except LabelloopError as exc:
            print(f"labelloop advise: {exc}", file=sys.stderr)
            return 1
    console = Console()
    target, current = advice["max_fake_negative_rate"], advice["current_window_s"]
    console.print(
        f"{args.use_case}: window now {_seconds(current)}; for at most {target:.1%} fake negatives: "
        f"[bold]{_seconds(advice['window_s']) if advice['window_s'] else 'no window up to the horizon'}[/bold]"
    )
    for event_type, found in advice["event_types"].items():
        table = Table(
            title=f"{event_type}: {found['sample']['positives']} events, horizon {_seconds(found['horizon_s'])}"
        )
        for column in ("window", "fake negatives", "95% interval", "median label wait"):
            table.add_column(column, justify="right")
        for point in found["curve"]:
            low, high = point["interval"]
            mark = " <- now" if point["window_s"] == current else ""
            mark += " <- advised" if found["advised"] and point["window_s"] == found["advised"]["window_s"] else ""
            table.add_row(
                _seconds(point["window_s"]) + mark,
                f"{point['fake_negative_rate']:.2%}",
                f"{low:.2%}-{high:.2%}",
                _seconds(point["median_label_wait_s"]),
            )
        console.print(table)
    return 0


def run_erase(args: argparse.Namespace) -> int:
    """DELETE /v1/subjects/{id} (admin scope): through the API, so that the serving process (the
    embedded store's only writer) does it, in Kafka mode as in embedded mode."""
    options = {"url": args.url} if args.url else {}
    with Client.from_env(**options) as client:
        try:
            gone = client.delete(f"/v1/subjects/{quote(args.subject_id, safe='')}")
        except LabelloopError as exc:
            print(f"labelloop erase: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(gone))
    else:
        print(
            f"erased {gone['predictions']} predictions, {gone['events']} events and {gone['labels']} label "
            f"revisions (erasure {gone['erasure_id']}; GET /v1/erasures lists it)"
        )
    return 0
