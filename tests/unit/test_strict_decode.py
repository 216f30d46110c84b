"""Messages apps produce straight to Kafka meet the same parser and limits as HTTP bodies: what
would be changed or cannot be stored is a dead letter, with the reason."""

from __future__ import annotations

import re

import pytest

from service.contract import Limits
from service.kafka.codec import PoisonRecord, decode_event, decode_prediction

P = b'"prediction_id": "P", "use_case": "recsys", "served_at": "2026-11-02T12:00:00Z"'


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"prediction_id": "Q", ' + P + b"}", "duplicate key 'prediction_id'"),
        (b"{" + P + b', "features": {"n": 18446744073709551616}}', "beyond 64 bits"),
        (b"{" + P + b', "features": {"n": Infinity}}', "Infinity is not JSON"),
        (b"{" + P + b', "features": {"s": "\xc3\x28"}}', "not UTF-8"),
        (b"{" + P + b', "features": {"s": "a\\u0000"}}', "NUL"),
        (b"{" + P + b', "features": {"s": "\\ud800"}}', "lone surrogate"),
        (b"{" + P + b', "model": "a/b"}', "model: Value error, holds '/'"),
        (b"[" * 3000, "nested too deep"),
        (b"{" + P + b', "features": {"n": ' + b"1" * 5000 + b"}}", "beyond 64 bits"),  # int() would refuse it
    ],
)
def test_hostile_predictions_are_poison(value: bytes, reason: str) -> None:
    with pytest.raises(PoisonRecord, match=re.escape(reason)):
        decode_prediction(value, 0)


def test_the_joiners_limits_apply() -> None:
    value = b"{" + P + b', "features": {"a": {"b": 1}}}'
    assert decode_prediction(value, 0).features == {"a": {"b": 1}}
    with pytest.raises(PoisonRecord, match="deeper than 1 levels"):
        decode_prediction(value, 0, Limits(depth=1))


def test_nul_in_an_event_value_is_poison() -> None:
    value = b'{"event_id": "E", "prediction_id": "P", "type": "rating", "value": "x\\u0000"}'
    with pytest.raises(PoisonRecord, match="value: Value error, a string holds a NUL"):
        decode_event(value, 0)
