"""The writer's bounded state of open predictions: copies out, committed state in, final ones
dropped, least recently used evicted."""

from __future__ import annotations

from datetime import timedelta

from service.core.model import Evidence, Phase
from service.core.windows import Deadlines
from service.store.state import OpenPrediction, OpenPredictions
from tests.conftest import T0


def pred(pid: str, phase: Phase = Phase.OPEN) -> OpenPrediction:
    return OpenPrediction(
        prediction_id=pid,
        use_case="recsys",
        served_at=T0,
        deadline=Deadlines(T0 + timedelta(minutes=10), T0 + timedelta(minutes=70)),
        phase=phase,
        current=None,
        feedback_delay_s=None,
        seq=None,
        stored_phase=phase,
        evidence=[],
    )


def test_a_checked_out_copy_changes_nothing_until_published() -> None:
    state = OpenPredictions(10)
    state.publish([pred("P")])
    work = state.checkout("P")
    assert work is not None
    work.phase = Phase.CLOSED
    assert work.evidence is not None
    work.evidence.append(Evidence("E", "click", T0, None, None))
    again = state.checkout("P")
    assert again is not None
    assert (again.phase, again.evidence) == (Phase.OPEN, [])  # a failed unit leaves no trace
    state.publish([work])
    published = state.checkout("P")
    assert published is not None
    assert (published.phase, [e.event_id for e in published.evidence or []]) == (Phase.CLOSED, ["E"])


def test_final_predictions_are_dropped() -> None:
    state = OpenPredictions(10)
    state.publish([pred("P"), pred("Q")])
    state.publish([pred("P", Phase.FINAL)])
    assert state.checkout("P") is None
    assert state.checkout("Q") is not None
    assert len(state) == 1


def test_the_least_recently_used_go_first() -> None:
    state = OpenPredictions(2)
    state.publish([pred("A"), pred("B")])
    assert state.checkout("A") is not None  # A used: B is now the oldest
    state.publish([pred("C")])
    assert [pid for pid in "ABC" if state.checkout(pid) is not None] == ["A", "C"]
    assert len(state) == 2


def test_no_capacity_holds_nothing() -> None:
    state = OpenPredictions(0)
    state.publish([pred("A")])
    assert state.checkout("A") is None


def test_clear_forgets_everything() -> None:
    state = OpenPredictions(10)
    state.publish([pred("A"), pred("B")])
    state.clear()
    assert len(state) == 0
