"""How a prediction's stored label moves when a new decision is resolved for it."""

from __future__ import annotations

from dataclasses import dataclass

from service.core.model import Decision, LabelStatus, LabelValue, Source
from service.core.policy import LabelKind


@dataclass(frozen=True, slots=True)
class CurrentLabel:
    label: LabelValue
    kind: LabelKind
    rule: str
    sources: tuple[Source, ...]
    revision: int
    status: LabelStatus


@dataclass(frozen=True, slots=True)
class LabelChange:
    decision: Decision
    revision: int
    fake_negative: bool  # an implicit negative that a counted positive turned out to contradict


def label_change(current: CurrentLabel | None, decision: Decision | None) -> LabelChange | None:
    """The change to record, or None when the label stays as it is."""
    if decision is None:
        return None
    if current is None:
        return LabelChange(decision=decision, revision=0, fake_negative=False)
    unchanged = (current.label, current.kind, current.rule, current.sources) == (
        decision.label,
        decision.kind,
        decision.rule,
        decision.sources,
    )
    if unchanged:
        return None
    return LabelChange(
        decision=decision,
        revision=current.revision + 1,
        fake_negative=current.kind is LabelKind.IMPLICIT_NEGATIVE and decision.label == 1,
    )
