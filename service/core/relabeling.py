"""Relabeling under a changed policy: how a stored event is used under the new policy, and the
tally of what changed. Resolution itself is resolve(), as for live labels.

The watermark at each event's arrival is not stored, so the stored events are judged by their
event time against the new seal: exactly what a backfill of them in event-time order gives. One
exception keeps final labels honest: an event stored as too late although it occurred before the
old seal arrived after its label was final, and it stays too late."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from service.core.labels import CurrentLabel
from service.core.model import Disposition, EventRecord, Evidence, Phase
from service.core.policy import PolicySet
from service.core.validation import InvalidRecord, check_event
from service.core.windows import Deadlines, event_timing


def rejudge(
    policies: PolicySet,
    use_case: str,
    old: Deadlines,
    new: Deadlines,
    event: Evidence,
    disposition: Disposition,
) -> tuple[Disposition, str | None]:
    """How a joined event (counted, too late or invalid) is used under the new policies, and the
    reason when invalid: its type unknown to the use case or its value refused."""
    record = EventRecord(event.event_id, "", event.type, value=event.value)
    try:
        check_event(policies, 0, record, use_case)
    except InvalidRecord as exc:
        return Disposition.INVALID, exc.reason
    if disposition is Disposition.TOO_LATE and event.occurred_at <= old.seal_at:
        return Disposition.TOO_LATE, None  # it arrived once the label was final
    return event_timing(new, event.occurred_at, Phase.CLOSED), None


def _value(label: CurrentLabel | None) -> str:
    return "none" if label is None else str(label.label)


@dataclass
class RelabelReport:
    """What a relabel changed (or, dry, would change) in one use case."""

    scanned: int = 0  # predictions read (erased ones are never read)
    revised: int = 0  # new label revisions: label, kind, rule or sources changed
    status_only: int = 0  # same label, its status moved (final <-> provisional): a new seq too
    rescheduled: int = 0  # window end or seal moved
    open: int = 0  # window still open under the new policy: left to the live path
    kept: int = 0  # labeled, but the new policy's events give none: kept (labels are never withdrawn)
    labels: Counter[tuple[str, str]] = field(default_factory=Counter)  # (old label, new label)
    rules: Counter[tuple[str, str]] = field(default_factory=Counter)  # (old rule, new rule)
    events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (old disposition, new)

    def revision(self, old: CurrentLabel | None, new: CurrentLabel) -> None:
        self.revised += 1
        self.labels[(_value(old), _value(new))] += 1
        self.rules[("none" if old is None else old.rule, new.rule)] += 1

    def add(self, other: RelabelReport) -> None:
        for name in ("scanned", "revised", "status_only", "rescheduled", "open", "kept"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.labels.update(other.labels)
        self.rules.update(other.rules)
        self.events.update(other.events)

    def as_json(self) -> dict[str, object]:
        def pairs(counter: Counter[tuple[str, str]]) -> list[dict[str, object]]:
            return [{"from": a, "to": b, "count": n} for (a, b), n in sorted(counter.items())]

        return {
            "scanned": self.scanned,
            "revised": self.revised,
            "status_only": self.status_only,
            "rescheduled": self.rescheduled,
            "open": self.open,
            "kept": self.kept,
            "labels": pairs(self.labels),
            "rules": pairs(self.rules),
            "events": pairs(self.events),
        }
