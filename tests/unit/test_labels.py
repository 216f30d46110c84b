"""label_change: how a stored label moves when a new decision is resolved."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.core.labels import CurrentLabel, LabelChange, label_change
from service.core.model import Decision, LabelStatus, Source
from service.core.policy import LabelKind

CLICK = Source(event_id="e-click", type="click", actor="user:1")
RETURN = Source(event_id="e-return", type="return", actor="user:1")
RATING = Source(event_id="e-rating", type="rating", actor="annotator:a")

IMPLICIT = Decision(
    label=0,
    kind=LabelKind.IMPLICIT_NEGATIVE,
    rule="window 0:10:00 closed with no positive: implicit negative",
    sources=(),
    feedback_delay_s=None,
)
CLICKED = Decision(
    label=1, kind=LabelKind.BEHAVIORAL, rule="events.click: positive, rank 0", sources=(CLICK,), feedback_delay_s=30.0
)
RETURNED = Decision(
    label=0, kind=LabelKind.BEHAVIORAL, rule="events.return: negative, rank 3", sources=(RETURN,), feedback_delay_s=1.0
)
RATED_UP = Decision(
    label=1, kind=LabelKind.EXPLICIT, rule="events.rating: explicit, latest", sources=(RATING,), feedback_delay_s=9.0
)
RATED_DOWN = replace(RATED_UP, label=0)


def current_of(decision: Decision, revision: int = 0, status: LabelStatus = LabelStatus.PROVISIONAL) -> CurrentLabel:
    return CurrentLabel(
        label=decision.label,
        kind=decision.kind,
        rule=decision.rule,
        sources=decision.sources,
        revision=revision,
        status=status,
    )


def test_no_decision_no_change() -> None:
    assert label_change(None, None) is None
    assert label_change(current_of(CLICKED), None) is None


def test_first_label_is_revision_0() -> None:
    assert label_change(None, CLICKED) == LabelChange(decision=CLICKED, revision=0, fake_negative=False)


def test_first_label_implicit_negative() -> None:
    change = label_change(None, IMPLICIT)
    assert change == LabelChange(decision=IMPLICIT, revision=0, fake_negative=False)


@pytest.mark.parametrize("decision", [IMPLICIT, CLICKED, RETURNED, RATED_UP])
@pytest.mark.parametrize("status", list(LabelStatus))
def test_identical_decision_is_no_change(decision: Decision, status: LabelStatus) -> None:
    assert label_change(current_of(decision, revision=3, status=status), decision) is None


def test_feedback_delay_alone_is_no_change() -> None:
    assert label_change(current_of(CLICKED), replace(CLICKED, feedback_delay_s=999.0)) is None


@pytest.mark.parametrize(
    "changed",
    [
        replace(CLICKED, label=0),
        replace(CLICKED, kind=LabelKind.EXPLICIT),
        replace(CLICKED, rule="events.click: positive, rank 1"),
        replace(CLICKED, sources=(Source(event_id="e-other", type="click", actor="user:1"),)),
        replace(CLICKED, sources=(CLICK, RATING)),
        replace(CLICKED, sources=(Source(event_id="e-click", type="click", actor="user:2"),)),
    ],
)
def test_any_field_change_is_a_change(changed: Decision) -> None:
    change = label_change(current_of(CLICKED, revision=2), changed)
    assert change == LabelChange(decision=changed, revision=3, fake_negative=False)


def test_revision_increments_from_current() -> None:
    change = label_change(current_of(CLICKED, revision=0), RETURNED)
    assert change is not None
    assert change.revision == 1
    change = label_change(current_of(RETURNED, revision=change.revision), RATED_UP)
    assert change is not None
    assert change.revision == 2


def test_implicit_negative_turned_positive_is_fake_negative() -> None:
    """Timeline case 3: the implicit negative is revised by a counted click."""
    change = label_change(current_of(IMPLICIT), CLICKED)
    assert change == LabelChange(decision=CLICKED, revision=1, fake_negative=True)


def test_implicit_negative_turned_explicit_positive_is_fake_negative() -> None:
    change = label_change(current_of(IMPLICIT, revision=4), RATED_UP)
    assert change is not None
    assert (change.revision, change.fake_negative) == (5, True)


@pytest.mark.parametrize("decision", [RETURNED, RATED_DOWN])
def test_implicit_negative_confirmed_negative_is_not_fake(decision: Decision) -> None:
    change = label_change(current_of(IMPLICIT), decision)
    assert change is not None
    assert change.revision == 1
    assert change.fake_negative is False


@pytest.mark.parametrize(
    ("current", "decision"),
    [(RETURNED, CLICKED), (RATED_DOWN, RATED_UP), (CLICKED, RETURNED), (RATED_UP, IMPLICIT)],
)
def test_other_flips_are_not_fake_negatives(current: Decision, decision: Decision) -> None:
    change = label_change(current_of(current), decision)
    assert change is not None
    assert change.revision == 1
    assert change.fake_negative is False
