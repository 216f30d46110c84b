"""Resolution: from the counted events of one prediction to one decision."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.core.model import Decision, EventValue, Evidence, Source
from service.core.policy import BUNDLED_POLICIES, LabelKind, UseCasePolicy, load_policies
from service.core.resolution import InvalidValue, explicit_label, resolve, validate_value

SERVED = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
POLICIES = load_policies(BUNDLED_POLICIES)
RECSYS = POLICIES.use_cases["recsys"]
ETA = POLICIES.use_cases["eta"]
FRAUD = POLICIES.use_cases["fraud"]


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return SERVED + timedelta(minutes=minutes, seconds=seconds)


def ev(
    event_id: str,
    type_: str,
    when: datetime,
    value: EventValue = None,
    actor: str | None = None,
) -> Evidence:
    return Evidence(event_id=event_id, type=type_, occurred_at=when, value=value, actor=actor)


def variant(base: UseCasePolicy, **changes: Any) -> UseCasePolicy:
    return UseCasePolicy.model_validate({**base.model_dump(), **changes})


MAJORITY = variant(RECSYS, explicit_resolution="majority")


def decide(events: list[Evidence], policy: UseCasePolicy = RECSYS, window_closed: bool = False) -> Decision | None:
    return resolve(policy, SERVED, events, window_closed)


def ids(decision: Decision | None) -> list[str]:
    assert decision is not None
    return [s.event_id for s in decision.sources]


# --- behavioral -----------------------------------------------------------------------------------


def test_nothing_yet_is_no_label() -> None:
    assert decide([]) is None


def test_click_is_positive() -> None:
    decision = decide([ev("e1", "click", at(seconds=30), actor="user:1")])
    assert decision == Decision(
        label=1,
        kind=LabelKind.BEHAVIORAL,
        rule="events.click: positive, rank 0",
        sources=(Source(event_id="e1", type="click", actor="user:1"),),
        feedback_delay_s=30.0,
    )


def test_return_outranks_purchase() -> None:
    purchase = ev("p", "purchase", at(5))
    ret = ev("r", "return", at(40))
    assert decide([purchase]) is not None
    assert decide([purchase]).label == 1  # type: ignore[union-attr]
    decision = decide([purchase, ret])
    assert decision is not None
    assert decision.label == 0
    assert decision.kind is LabelKind.BEHAVIORAL
    assert decision.rule == "events.return: negative, rank 3"
    assert ids(decision) == ["r"]
    assert decision.feedback_delay_s == 40 * 60


def test_higher_rank_wins_regardless_of_time() -> None:
    decision = decide([ev("c", "click", at(1)), ev("a", "add_to_cart", at(9)), ev("c2", "click", at(0.5))])
    assert ids(decision) == ["a"]
    assert decision is not None
    assert decision.feedback_delay_s == 9 * 60


def test_equal_rank_goes_to_earliest_event() -> None:
    decision = decide([ev("late", "click", at(7)), ev("early", "click", at(2)), ev("mid", "click", at(4))])
    assert ids(decision) == ["early"]
    assert decision is not None
    assert decision.feedback_delay_s == 120.0


def test_equal_rank_positive_and_negative_earliest_decides() -> None:
    policy = UseCasePolicy.model_validate(
        {
            "task": "binary",
            "window": "10m",
            "events": {"like": {"kind": "positive", "rank": 1}, "hide": {"kind": "negative", "rank": 1}},
        }
    )
    like_first = decide([ev("l", "like", at(1)), ev("h", "hide", at(2))], policy)
    hide_first = decide([ev("l", "like", at(3)), ev("h", "hide", at(2))], policy)
    assert like_first is not None
    assert hide_first is not None
    assert (like_first.label, ids(like_first)) == (1, ["l"])
    assert (hide_first.label, ids(hide_first)) == (0, ["h"])


def test_equal_rank_same_time_tie_breaks_on_event_id() -> None:
    decision = decide([ev("b", "click", at(2)), ev("a", "click", at(2))])
    assert ids(decision) == ["a"]


def test_unknown_event_types_are_ignored() -> None:
    assert decide([ev("x", "trip_completed", at(1), value=5)]) is None
    decision = decide([ev("x", "trip_completed", at(1), value=5), ev("c", "click", at(2))])
    assert ids(decision) == ["c"]


# --- explicit -------------------------------------------------------------------------------------


def test_explicit_beats_behavioral_by_default() -> None:
    decision = decide([ev("c", "click", at(1)), ev("r", "rating", at(2), value=1)])
    assert decision is not None
    assert decision.label == 0
    assert decision.kind is LabelKind.EXPLICIT
    assert ids(decision) == ["r"]
    assert decision.feedback_delay_s == 120.0


def test_explicit_beats_behavioral_even_when_earlier() -> None:
    decision = decide([ev("r", "rating", at(1), value=2), ev("p", "purchase", at(5))])
    assert decision is not None
    assert (decision.label, decision.kind) == (0, LabelKind.EXPLICIT)


def test_custom_priority_puts_behavioral_first() -> None:
    policy = variant(
        RECSYS,
        priority=[LabelKind.BEHAVIORAL, LabelKind.EXPLICIT, LabelKind.NATURAL, LabelKind.IMPLICIT_NEGATIVE],
    )
    events = [ev("c", "click", at(1)), ev("r", "rating", at(2), value=1)]
    decision = decide(events, policy)
    assert decision is not None
    assert (decision.label, decision.kind, ids(decision)) == (1, LabelKind.BEHAVIORAL, ["c"])
    # Without a behavioral event the explicit one still decides.
    only_rating = decide([events[1]], policy)
    assert only_rating is not None
    assert (only_rating.label, only_rating.kind) == (0, LabelKind.EXPLICIT)


def test_explicit_latest_takes_most_recent() -> None:
    events = [
        ev("a", "rating", at(1), value=5, actor="annotator:a"),
        ev("b", "rating", at(3), value=1, actor="annotator:b"),
        ev("c", "rating", at(2), value=4, actor="annotator:c"),
    ]
    decision = decide(events)
    assert decision is not None
    assert decision.label == 0
    assert decision.rule == "events.rating: explicit, latest"
    assert decision.sources == (Source(event_id="b", type="rating", actor="annotator:b"),)
    assert decision.feedback_delay_s == 180.0


def test_explicit_latest_across_event_types() -> None:
    decision = decide([ev("r", "rating", at(1), value=5), ev("t", "thumbs", at(2), value="down")])
    assert decision is not None
    assert (decision.label, ids(decision)) == (0, ["t"])


def test_explicit_majority_5_1_4_gives_1() -> None:
    events = [
        ev("a", "rating", at(1), value=5, actor="annotator:a"),
        ev("b", "rating", at(2), value=1, actor="annotator:b"),
        ev("c", "rating", at(3), value=4, actor="annotator:c"),
    ]
    decision = decide(events, MAJORITY)
    assert decision is not None
    assert decision.label == 1
    assert decision.kind is LabelKind.EXPLICIT
    assert decision.rule == "explicit: majority 2 of 3"
    assert ids(decision) == ["a", "c"]
    assert decision.feedback_delay_s == 180.0
    # The same votes under `latest` would follow annotator c alone.
    assert decide(events).sources == (Source("c", "rating", "annotator:c"),)  # type: ignore[union-attr]


def test_explicit_majority_outvotes_the_latest() -> None:
    events = [
        ev("a", "rating", at(1), value=1),
        ev("b", "rating", at(2), value=2),
        ev("c", "rating", at(3), value=5),
    ]
    majority = decide(events, MAJORITY)
    latest = decide(events)
    assert majority is not None
    assert latest is not None
    assert (majority.label, latest.label) == (0, 1)


@pytest.mark.parametrize(("positive_at", "negative_at", "expected"), [(1, 2, 0), (2, 1, 1)])
def test_explicit_majority_tie_goes_to_most_recent_vote(positive_at: float, negative_at: float, expected: int) -> None:
    events = [ev("pos", "rating", at(positive_at), value=5), ev("neg", "rating", at(negative_at), value=1)]
    decision = decide(events, MAJORITY)
    assert decision is not None
    assert decision.label == expected
    assert decision.rule == "explicit: majority 1 of 2"
    assert ids(decision) == (["neg"] if expected == 0 else ["pos"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 1), (4, 1), (4.0, 1), (3.99, 0), (3, 0), (1, 0)],
)
def test_rating_maps_at_least_4_to_1(value: float, expected: int) -> None:
    decision = decide([ev("r", "rating", at(1), value=value)])
    assert decision is not None
    assert decision.label == expected
    assert explicit_label(RECSYS.events["rating"], "binary", value) == expected


@pytest.mark.parametrize(("value", "expected"), [("up", 1), ("down", 0)])
def test_values_map(value: str, expected: int) -> None:
    decision = decide([ev("t", "thumbs", at(1), value=value)])
    assert decision is not None
    assert decision.label == expected
    assert type(decision.label) is int


def test_fraud_values_map() -> None:
    decision = decide([ev("f", "fraud_confirmed", at(60 * 24), value="legit")], FRAUD)
    assert decision is not None
    assert (decision.label, decision.kind) == (0, LabelKind.EXPLICIT)


# --- natural and regression -----------------------------------------------------------------------


def test_natural_value() -> None:
    decision = decide([ev("t", "trip_completed", at(seconds=1712), value=1712)], ETA)
    assert decision == Decision(
        label=1712,
        kind=LabelKind.NATURAL,
        rule="events.trip_completed: natural value",
        sources=(Source("t", "trip_completed", None),),
        feedback_delay_s=1712.0,
    )


def test_natural_value_latest_wins() -> None:
    events = [
        ev("second", "trip_completed", at(seconds=1800), value=1800.5),
        ev("first", "trip_completed", at(seconds=1712), value=1712),
    ]
    decision = decide(events, ETA)
    assert decision is not None
    assert decision.label == 1800.5
    assert ids(decision) == ["second"]


def test_natural_integral_float_becomes_int() -> None:
    decision = decide([ev("t", "trip_completed", at(1), value=1712.0)], ETA)
    assert decision is not None
    assert decision.label == 1712
    assert type(decision.label) is int


def test_explicit_correction_beats_natural_in_regression() -> None:
    events = [
        ev("t", "trip_completed", at(seconds=1712), value=1712),
        ev("d", "duration_correction", at(seconds=1000), value=1650),
    ]
    decision = decide(events, ETA)
    assert decision is not None
    assert (decision.label, decision.kind) == (1650, LabelKind.EXPLICIT)


def test_regression_expire_gives_none() -> None:
    assert decide([], ETA, window_closed=True) is None
    assert decide([], ETA, window_closed=False) is None


# --- implicit negatives ---------------------------------------------------------------------------


def test_implicit_negative_when_window_closed() -> None:
    decision = decide([], window_closed=True)
    assert decision is not None
    assert decision.label == 0
    assert decision.kind is LabelKind.IMPLICIT_NEGATIVE
    assert decision.sources == ()
    assert decision.feedback_delay_s is None
    assert "implicit negative" in decision.rule


def test_no_implicit_negative_while_window_open() -> None:
    assert decide([], window_closed=False) is None


def test_no_implicit_negative_when_policy_expires() -> None:
    policy = variant(RECSYS, on_window_close="expire")
    assert decide([], policy, window_closed=True) is None


def test_positive_beats_implicit_negative_after_close() -> None:
    decision = decide([ev("c", "click", at(12))], window_closed=True)
    assert decision is not None
    assert (decision.label, decision.kind) == (1, LabelKind.BEHAVIORAL)


def test_unknown_events_do_not_prevent_implicit_negative() -> None:
    decision = decide([ev("x", "page_view", at(1))], window_closed=True)
    assert decision is not None
    assert decision.kind is LabelKind.IMPLICIT_NEGATIVE


# --- order independence ---------------------------------------------------------------------------

ORDER_CASES = [
    pytest.param(
        RECSYS,
        [
            ev("c1", "click", at(1)),
            ev("c2", "click", at(1)),
            ev("a", "add_to_cart", at(3)),
            ev("p", "purchase", at(5)),
            ev("r", "return", at(40)),
        ],
        id="behavioral-ranks",
    ),
    pytest.param(
        RECSYS,
        [
            ev("c", "click", at(1)),
            ev("r1", "rating", at(2), value=5),
            ev("r2", "rating", at(2), value=1),
            ev("t", "thumbs", at(2), value="up"),
            ev("p", "purchase", at(4)),
        ],
        id="explicit-latest-same-time",
    ),
    pytest.param(
        MAJORITY,
        [
            ev("a", "rating", at(1), value=5, actor="annotator:a"),
            ev("b", "rating", at(2), value=1, actor="annotator:b"),
            ev("c", "rating", at(3), value=4, actor="annotator:c"),
            ev("d", "thumbs", at(4), value="down", actor="annotator:d"),
            ev("x", "click", at(0.5)),
        ],
        id="majority-2-2-tie",
    ),
    pytest.param(
        MAJORITY,
        [
            ev("a", "rating", at(2), value=5),
            ev("b", "rating", at(2), value=1),
            ev("c", "thumbs", at(2), value="up"),
            ev("d", "thumbs", at(2), value="down"),
        ],
        id="majority-tie-same-time",
    ),
    pytest.param(
        ETA,
        [
            ev("t1", "trip_completed", at(seconds=1700), value=1700),
            ev("t2", "trip_completed", at(seconds=1712), value=1712),
            ev("t3", "trip_completed", at(seconds=1712), value=1713.5),
            ev("t0", "trip_completed", at(seconds=100), value=9),
        ],
        id="natural-latest",
    ),
]


@pytest.mark.parametrize(("policy", "events"), ORDER_CASES)
@pytest.mark.parametrize("window_closed", [False, True])
def test_every_permutation_resolves_the_same(
    policy: UseCasePolicy, events: list[Evidence], window_closed: bool
) -> None:
    expected = resolve(policy, SERVED, events, window_closed)
    assert expected is not None
    for order in itertools.permutations(events):
        assert resolve(policy, SERVED, list(order), window_closed) == expected, order


def test_order_cases_decide_as_documented() -> None:
    """The permutation cases above are not trivially equal: check what they resolve to."""
    (beh_policy, beh), (lat_policy, lat), (maj_policy, maj), (tie_policy, tie), (nat_policy, nat) = (
        p.values for p in ORDER_CASES
    )
    assert ids(resolve(beh_policy, SERVED, beh, False)) == ["r"]
    assert ids(resolve(lat_policy, SERVED, lat, False)) == ["t"]  # latest at 12:02, highest event_id
    majority = resolve(maj_policy, SERVED, maj, False)
    assert majority is not None
    assert (majority.label, ids(majority)) == (0, ["b", "d"])  # 2-2 tie: the most recent vote (d) was 0
    tied = resolve(tie_policy, SERVED, tie, False)
    assert tied is not None
    assert (tied.label, ids(tied)) == (0, ["b", "d"])  # same time: event_id d is the most recent
    natural = resolve(nat_policy, SERVED, nat, False)
    assert natural is not None
    assert (natural.label, ids(natural)) == (1713.5, ["t3"])


# --- feedback delay -------------------------------------------------------------------------------


def test_feedback_delay_clamped_to_zero_for_skewed_events() -> None:
    decision = decide([ev("c", "click", SERVED - timedelta(seconds=10))])
    assert decision is not None
    assert decision.label == 1
    assert decision.feedback_delay_s == 0.0


def test_feedback_delay_clamped_for_explicit_and_natural() -> None:
    early = SERVED - timedelta(minutes=5)
    explicit = decide([ev("r", "rating", early, value=5)])
    natural = decide([ev("t", "trip_completed", early, value=10)], ETA)
    assert explicit is not None
    assert natural is not None
    assert explicit.feedback_delay_s == 0.0
    assert natural.feedback_delay_s == 0.0


def test_feedback_delay_keeps_sub_second_precision() -> None:
    decision = decide([ev("c", "click", SERVED + timedelta(milliseconds=250))])
    assert decision is not None
    assert decision.feedback_delay_s == pytest.approx(0.25)


# --- validate_value -------------------------------------------------------------------------------

BINARY_PLAIN = UseCasePolicy.model_validate(
    {"task": "binary", "window": "1h", "events": {"label": {"kind": "explicit"}, "c": {"kind": "positive"}}}
)


@pytest.mark.parametrize(
    ("policy", "event_type", "value", "message"),
    [
        (RECSYS, "rating", "five", "must be a number"),
        (RECSYS, "rating", None, "must be a number"),
        (RECSYS, "rating", True, "must be a number"),  # a boolean is no star count
        (BINARY_PLAIN, "label", "yes", "must be a number or a boolean"),
        (ETA, "duration_correction", True, "must be a number"),
        (ETA, "trip_completed", float("nan"), "must be a number"),
        (ETA, "trip_completed", float("inf"), "must be a number"),
        (RECSYS, "thumbs", "sideways", "must be one of ['down', 'up']"),
        (RECSYS, "thumbs", 1, "must be one of ['down', 'up']"),
        (BINARY_PLAIN, "label", 2, "must be 0 or 1"),
        (BINARY_PLAIN, "label", 0.5, "must be 0 or 1"),
        (ETA, "trip_completed", "fast", "must be a number"),
        (ETA, "trip_completed", None, "must be a number"),
        (ETA, "trip_completed", True, "must be a number"),
        (ETA, "duration_correction", "x", "must be a number"),
    ],
)
def test_validate_value_rejects(policy: UseCasePolicy, event_type: str, value: EventValue, message: str) -> None:
    with pytest.raises(InvalidValue) as excinfo:
        validate_value(policy, event_type, value)
    assert str(excinfo.value) == message or str(excinfo.value).startswith(message)


def test_validate_value_regression_message_does_not_offer_booleans() -> None:
    with pytest.raises(InvalidValue) as excinfo:
        validate_value(ETA, "duration_correction", "x")
    assert str(excinfo.value) == "must be a number"


@pytest.mark.parametrize(
    ("policy", "event_type", "value"),
    [
        (RECSYS, "rating", 3),
        (RECSYS, "rating", 4.5),
        (RECSYS, "thumbs", "up"),
        (RECSYS, "click", None),  # behavioral events carry no label value
        (RECSYS, "click", "anything"),
        (BINARY_PLAIN, "label", True),
        (BINARY_PLAIN, "label", 0),
        (BINARY_PLAIN, "label", 1.0),
        (ETA, "trip_completed", 1712.5),
        (ETA, "duration_correction", 1650),
    ],
)
def test_validate_value_accepts(policy: UseCasePolicy, event_type: str, value: EventValue) -> None:
    validate_value(policy, event_type, value)


def test_boolean_explicit_in_binary() -> None:
    decision = decide([ev("l", "label", at(1), value=True)], BINARY_PLAIN)
    assert decision is not None
    assert decision.label == 1
    assert type(decision.label) is int
