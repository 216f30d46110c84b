"""How stored events are judged again under a new policy, and the relabel report's tally."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from service.core.labels import CurrentLabel
from service.core.model import Disposition, Evidence, LabelStatus
from service.core.policy import BUNDLED_POLICIES, LabelKind, PolicySet, load_policies
from service.core.relabeling import RelabelReport, rejudge
from service.core.windows import deadlines

SERVED = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
A = load_policies(BUNDLED_POLICIES)


def with_recsys(**changes: object) -> PolicySet:
    raw = A.model_dump(mode="json")
    raw["use_cases"]["recsys"].update(changes)
    return PolicySet.model_validate(raw)


B = with_recsys(window="30m", allowed_lateness="3h")  # seal: served + 3 h 30 min
OLD = deadlines(A.use_cases["recsys"], SERVED)  # seal: served + 1 h 10 min
NEW = deadlines(B.use_cases["recsys"], SERVED)


def click(minutes: float, type: str = "click", value: object = None) -> Evidence:
    return Evidence(f"e-{minutes}", type, SERVED + timedelta(minutes=minutes), value, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("minutes", "stored", "now"),
    [
        (5, Disposition.COUNTED, Disposition.COUNTED),
        (120, Disposition.TOO_LATE, Disposition.COUNTED),  # occurred after the old seal, before the new
        (240, Disposition.TOO_LATE, Disposition.TOO_LATE),  # after both
        (30, Disposition.TOO_LATE, Disposition.TOO_LATE),  # before the old seal: arrived once final, stays
        (210, Disposition.TOO_LATE, Disposition.COUNTED),  # at the new seal exactly: counts
    ],
)
def test_a_longer_seal_counts_what_occurred_before_it(minutes: float, stored: Disposition, now: Disposition) -> None:
    assert rejudge(B, "recsys", OLD, NEW, click(minutes), stored) == (now, None)


def test_a_shorter_seal_makes_what_occurred_after_it_too_late() -> None:
    shorter = with_recsys(allowed_lateness="10m")  # seal: served + 20 min
    new = deadlines(shorter.use_cases["recsys"], SERVED)
    assert rejudge(shorter, "recsys", OLD, new, click(30), Disposition.COUNTED) == (Disposition.TOO_LATE, None)
    assert rejudge(shorter, "recsys", OLD, new, click(15), Disposition.COUNTED) == (Disposition.COUNTED, None)


def test_an_event_type_the_new_policy_adds_counts_and_one_it_drops_is_invalid() -> None:
    raw = B.model_dump(mode="json")
    raw["use_cases"]["recsys"]["events"]["share"] = {"kind": "positive"}
    del raw["use_cases"]["recsys"]["events"]["click"]
    c = PolicySet.model_validate(raw)
    assert rejudge(c, "recsys", OLD, NEW, click(5, "share"), Disposition.INVALID) == (Disposition.COUNTED, None)
    disposition, reason = rejudge(c, "recsys", OLD, NEW, click(5), Disposition.COUNTED)
    assert disposition is Disposition.INVALID
    assert reason is not None
    assert "unknown event type 'click'" in reason


def test_a_value_the_new_policy_refuses_is_invalid() -> None:
    stricter = with_recsys(events={"thumbs": {"kind": "explicit", "values": {"up": 1}}})
    disposition, reason = rejudge(stricter, "recsys", OLD, OLD, click(5, "thumbs", "down"), Disposition.COUNTED)
    assert disposition is Disposition.INVALID
    assert reason is not None
    assert "must be one of ['up']" in reason


def label(value: int, rule: str, revision: int = 0) -> CurrentLabel:
    return CurrentLabel(value, LabelKind.BEHAVIORAL, rule, (), revision, LabelStatus.FINAL)


def test_the_report_tallies_label_and_rule_transitions_and_adds_up() -> None:
    first, second = RelabelReport(scanned=2), RelabelReport(scanned=1, open=1)
    first.revision(label(0, "window"), label(1, "events.click", 1))
    first.revision(None, label(1, "events.click"))
    second.revision(label(0, "window"), label(1, "events.click", 1))
    second.events[("too_late", "counted")] += 2
    first.add(second)
    assert (first.scanned, first.revised, first.open) == (3, 3, 1)
    assert first.labels == Counter({("0", "1"): 2, ("none", "1"): 1})
    assert first.rules == Counter({("window", "events.click"): 2, ("none", "events.click"): 1})
    assert first.as_json()["events"] == [{"from": "too_late", "to": "counted", "count": 2}]
