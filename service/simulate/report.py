"""What `labelloop simulate` shows: a progress bar while it runs (stderr), and a table of what it
sent beside what the service reports (stdout)."""

from __future__ import annotations

from types import TracebackType

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.simulate.run import QUANTILES, Sent, Summary


class Bar:
    """The run's progress over duration + grace seconds, with what was sent so far."""

    def __init__(self, duration: float, grace: float, console: Console) -> None:
        self._duration = duration
        self._progress = Progress(
            TextColumn("{task.description:<8}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,  # no bar in a log or a pipe
        )
        self._task: TaskID = self._progress.add_task("serving", total=duration + grace, detail="")

    def __enter__(self) -> Bar:
        self._progress.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._progress.stop()

    def __call__(self, elapsed: float, sent: Sent) -> None:
        events = sum(sent.events.values()) + sum(sent.duplicates.values())
        self._progress.update(
            self._task,
            completed=elapsed,
            description="serving" if elapsed < self._duration else "draining",
            detail=f"{sent.predictions} predictions, {events} events",
        )


def _seconds(figures: dict[str, float | None] | None, key: str, dim: bool = False) -> str:
    """Dim: the service's quantiles cover earlier traffic too."""
    value = (figures or {}).get(key)
    text = "-" if value is None else f"{value:.2f}"
    return f"[dim]{text}[/]" if dim else text


def _mark(ok: bool | None) -> str:
    return {True: "[green]yes[/]", False: "[red]NO[/]", None: ""}[ok]


def render(summary: Summary, console: Console) -> None:
    """Per event type a row of what was sent and, under it, a row of what the service reports."""
    sent, service, checks = summary.sent, summary.service(), summary.checks()
    console.print(
        f"[bold]labelloop simulate --scenario {summary.scenario}[/] --seed {summary.seed}: run {summary.run}, "
        f"{summary.rate:g}/s for {summary.duration:g} s + {summary.grace:g} s grace, {summary.elapsed_s:.1f} s"
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title_justify="left")
    table.title = f"use case {summary.use_case}: sent, and what the service reports"
    table.add_column("")
    table.add_column("")
    for column in ("count", "dups", "skewed", "never", *(f"{q[:3]} s" for q in QUANTILES)):
        table.add_column(column, justify="right")
    table.add_column("agree", justify="center")
    table.add_row("predictions", "sent", str(sent.predictions))
    table.add_row(
        "",
        "service",
        str(service["served"]) if service else "-",
        *[""] * 6,
        _mark(checks.get("served")),
        end_section=True,
    )
    sent_delays = sent.delay_quantiles()
    types = sorted(set(sent.events) | set(sent.not_happened) | set(service["events"] if service else ()))
    for t in types:
        mine: dict[str, float | None] = dict(sent_delays.get(t, {}))
        theirs = service["feedback_delay"].get(t) if service else None
        ok = [checks[k] for k in (f"events.{t}", f"clock_skew.{t}", f"delay.{t}") if k in checks]
        table.add_row(
            t,
            "sent",
            str(sent.events[t]),
            str(sent.duplicates[t]),
            str(sent.skewed[t]),
            str(sent.not_happened[t]),
            *(_seconds(mine, q) for q in QUANTILES),
        )
        table.add_row(
            "",
            "service",
            str(service["events"].get(t, 0)) if service else "-",
            "",
            str(service["clock_skew"].get(t, 0)) if service else "-",
            "",
            *(_seconds(theirs, q, dim=bool(service and service["earlier_served"])) for q in QUANTILES),
            _mark(all(ok) if ok else None),
            end_section=True,
        )
    console.print(table)
    duplicates = sum(sent.duplicates.values())
    notes = [
        f"dups: {duplicates} events sent again with the same event_id; the service counts each once",
        "skewed: stamped before their prediction was served; the service counts them with delay 0",
        "never: due after the grace, so never sent (the users who did not click in time)",
        "delays: occurred_at - served_at; the service reads its quantiles from buckets 10% wide",
    ]
    if service is not None and service["earlier_served"]:
        notes.append(
            f"the service had {service['earlier_served']} earlier {summary.use_case} predictions: counts are this "
            "run's (after minus before); its delay quantiles include the earlier traffic and are not compared"
        )
    if summary.service_error:
        notes.append(f"[yellow]service figures unavailable[/]: {summary.service_error} (they need the ops scope)")
    if sent.refused or sent.undelivered:
        notes.append(f"[red]{sent.refused} records refused, {sent.undelivered} not delivered[/]")
    agrees = summary.agrees()
    if agrees is not None:
        notes.append("[green]the service agrees with what was sent[/]" if agrees else "[red]the service disagrees[/]")
    for note in notes:
        console.print(note, highlight=False)
