"""Where a label is resolved: from the counted events of one prediction to one decision.

The decision depends only on the set of counted events and on whether the window has closed,
never on the order they arrived in, so replays and backfills resolve to the same labels.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from service.core.model import Decision, EventValue, Evidence, LabelValue, Source
from service.core.policy import EventKind, EventRule, LabelKind, UseCasePolicy


class InvalidValue(ValueError):
    """An event value that its event type's rule cannot turn into a label."""


def explicit_label(rule: EventRule, task: str, value: EventValue) -> LabelValue:
    if rule.values is not None:
        if not isinstance(value, str) or value not in rule.values:
            raise InvalidValue(f"must be one of {sorted(rule.values)}")
        return _as_number(rule.values[value])
    plain_binary = task == "binary" and rule.positive_at_least is None
    if isinstance(value, bool) and plain_binary:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidValue("must be a number" + (" or a boolean" if plain_binary else ""))
    if rule.positive_at_least is not None:
        return 1 if value >= rule.positive_at_least else 0
    if task == "binary" and value not in (0, 1):
        raise InvalidValue("must be 0 or 1 (or true/false) for a binary label")
    return _as_number(value)


def natural_label(value: EventValue) -> LabelValue:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidValue("must be a number")
    return _as_number(value)


def validate_value(policy: UseCasePolicy, event_type: str, value: EventValue) -> None:
    """Raise InvalidValue when the event could never contribute a label under this policy."""
    rule = policy.events[event_type]
    if rule.kind is EventKind.EXPLICIT:
        explicit_label(rule, policy.task, value)
    elif rule.kind is EventKind.NATURAL:
        natural_label(value)


def _as_number(value: float) -> LabelValue:
    return int(value) if float(value).is_integer() else float(value)


def _delay(served_at: datetime, event: Evidence) -> float:
    return max(0.0, (event.occurred_at - served_at).total_seconds())


def _source(event: Evidence) -> Source:
    return Source(event_id=event.event_id, type=event.type, actor=event.actor)


def _latest(events: Sequence[Evidence]) -> Evidence:
    return max(events, key=lambda e: (e.occurred_at, e.event_id))


def _explicit(policy: UseCasePolicy, served_at: datetime, events: Sequence[Evidence]) -> Decision | None:
    votes = [(e, explicit_label(policy.events[e.type], policy.task, e.value)) for e in events]
    if not votes:
        return None
    if policy.explicit_resolution == "latest":
        chosen = _latest([e for e, _ in votes])
        label = next(v for e, v in votes if e is chosen)
        return Decision(
            label=label,
            kind=LabelKind.EXPLICIT,
            rule=f"events.{chosen.type}: explicit, latest",
            sources=(_source(chosen),),
            feedback_delay_s=_delay(served_at, chosen),
        )
    tally = Counter(v for _, v in votes)
    top = max(tally.values())
    tied = {v for v, n in tally.items() if n == top}
    # A tie goes to the label of the most recent vote among the tied labels.
    deciding = _latest([e for e, v in votes if v in tied])
    label = next(v for e, v in votes if e is deciding)
    voters = sorted((e for e, v in votes if v == label), key=lambda e: (e.occurred_at, e.event_id))
    return Decision(
        label=label,
        kind=LabelKind.EXPLICIT,
        rule=f"explicit: majority {top} of {len(votes)}",
        sources=tuple(_source(e) for e in voters),
        feedback_delay_s=_delay(served_at, deciding),
    )


def _behavioral(policy: UseCasePolicy, served_at: datetime, events: Sequence[Evidence]) -> Decision | None:
    if not events:
        return None
    # The highest-ranked signal decides; among equals the first one, the actual feedback moment.
    chosen = min(events, key=lambda e: (-policy.events[e.type].rank, e.occurred_at, e.event_id))
    rule = policy.events[chosen.type]
    return Decision(
        label=1 if rule.kind is EventKind.POSITIVE else 0,
        kind=LabelKind.BEHAVIORAL,
        rule=f"events.{chosen.type}: {rule.kind.value}, rank {rule.rank}",
        sources=(_source(chosen),),
        feedback_delay_s=_delay(served_at, chosen),
    )


def _natural(served_at: datetime, events: Sequence[Evidence]) -> Decision | None:
    if not events:
        return None
    chosen = _latest(events)
    return Decision(
        label=natural_label(chosen.value),
        kind=LabelKind.NATURAL,
        rule=f"events.{chosen.type}: natural value",
        sources=(_source(chosen),),
        feedback_delay_s=_delay(served_at, chosen),
    )


def resolve(
    policy: UseCasePolicy, served_at: datetime, counted: Sequence[Evidence], window_closed: bool
) -> Decision | None:
    """The label of one prediction given its counted events; None while there is none yet."""
    by_kind: dict[EventKind, list[Evidence]] = {kind: [] for kind in EventKind}
    for event in counted:
        rule = policy.events.get(event.type)
        if rule is not None:
            by_kind[rule.kind].append(event)
    behavioral = by_kind[EventKind.POSITIVE] + by_kind[EventKind.NEGATIVE]
    for kind in policy.priority:
        if kind is LabelKind.EXPLICIT:
            decision = _explicit(policy, served_at, by_kind[EventKind.EXPLICIT])
        elif kind is LabelKind.BEHAVIORAL:
            decision = _behavioral(policy, served_at, behavioral)
        elif kind is LabelKind.NATURAL:
            decision = _natural(served_at, by_kind[EventKind.NATURAL])
        elif window_closed and policy.on_window_close == "implicit_negative":
            decision = Decision(
                label=0,
                kind=LabelKind.IMPLICIT_NEGATIVE,
                rule=f"window {policy.window} closed with no positive: implicit negative",
                sources=(),
                feedback_delay_s=None,
            )
        else:
            decision = None
        if decision is not None:
            return decision
    return None
