"""Features a policy keeps out of the store, without I/O."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.core.model import PredictionRecord
from service.core.policy import FeaturePolicy, PolicySet, UseCasePolicy
from service.core.privacy import HASHED, scrub, subject_forms

KEY = b"k" * 32


def policies(**features: list[str]) -> PolicySet:
    private = UseCasePolicy.model_validate(
        {"task": "binary", "events": {"click": {"kind": "positive"}}, "window": "10m", "features": features}
    )
    return PolicySet(use_cases={"private": private, "plain": private.model_copy(update={"features": FeaturePolicy()})})


def record(use_case: str = "private", **features: object) -> PredictionRecord:
    return PredictionRecord(prediction_id="p", use_case=use_case, features=features)


def test_dropped_keys_go_and_hashed_ones_are_keyed_hashes() -> None:
    rules = policies(drop=["email"], hash=["card", "user"])
    (out,) = scrub(rules, [record(email="a@b.example", card="4111", user={"id": 7}, position=3)], KEY)
    assert out.features is not None
    assert set(out.features) == {"card", "user", "position"}
    assert out.features["position"] == 3
    assert str(out.features["card"]).startswith(HASHED)
    assert "4111" not in str(out.features)
    assert out.features["card"] != out.features["user"]
    (other_key,) = scrub(rules, [record(card="4111")], b"another key")
    assert other_key.features != {"card": out.features["card"]}  # keyed: not a plain digest


def test_scrubbing_twice_is_scrubbing_once() -> None:
    rules = policies(drop=["email"], hash=["card"])
    once = scrub(rules, [record(email="x", card="4111")], KEY)
    assert scrub(rules, once, KEY) == once  # the API and then a joiner, or a replay


def test_other_use_cases_and_records_without_features_are_untouched() -> None:
    rules = policies(drop=["email"])
    untouched = [record("plain", email="x"), record("unknown", email="x"), PredictionRecord("q", "private")]
    assert scrub(rules, untouched, KEY) == untouched


def test_hashing_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="LABELLOOP_FEATURE_HASH_KEY"):
        scrub(policies(hash=["card"]), [record(card="4111")], None)


def test_a_feature_is_dropped_or_hashed_not_both() -> None:
    with pytest.raises(ValidationError, match="not both"):
        FeaturePolicy(drop=frozenset({"card"}), hash=frozenset({"card"}))


def subject_policies(subject: str, **features: list[str]) -> PolicySet:
    rules = {"task": "binary", "events": {"click": {"kind": "positive"}}, "window": "10m"}
    policy = UseCasePolicy.model_validate({**rules, "subject": subject, "features": features})
    return PolicySet(use_cases={"private": policy})


def test_the_subject_field_fills_subject_id_and_an_explicit_one_wins() -> None:
    rules = subject_policies("features.user_id")
    (filled,) = scrub(rules, [record(user_id=42, position=1)], None)
    assert filled.subject_id == "42"
    assert filled.features == {"user_id": 42, "position": 1}
    explicit = PredictionRecord(prediction_id="p", use_case="private", subject_id="u-7", features={"user_id": 42})
    assert scrub(rules, [explicit], None) == [explicit]
    (context,) = scrub(
        subject_policies("context.account"),
        [PredictionRecord(prediction_id="p", use_case="private", context={"account": "acct-9"})],
        None,
    )
    assert context.subject_id == "acct-9"
    for not_an_id in ({"nested": 1}, True, 1.5, None):
        (none,) = scrub(rules, [record(user_id=not_an_id)], None)
        assert none.subject_id is None


def test_a_hashed_subject_feature_makes_a_hashed_subject_that_erasure_finds() -> None:
    rules = subject_policies("features.user_id", hash=["user_id"])
    (out,) = scrub(rules, [record(user_id=42)], KEY)
    assert out.features is not None
    assert out.subject_id == out.features["user_id"]
    assert str(out.subject_id).startswith(HASHED)
    assert out.subject_id in subject_forms("42", KEY)  # the number, as the path names it
    (text,) = scrub(rules, [record(user_id="alice")], KEY)
    assert text.subject_id in subject_forms("alice", KEY)
    assert subject_forms("alice", None) == ["alice"]
    assert scrub(rules, [out], KEY) == [out]  # a joiner scrubbing again changes nothing


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"subject": "features"}, "subject must be"),
        ({"subject": "payload.user"}, "subject must be"),
        ({"subject": "features.email", "features": {"drop": ["email"]}}, "cannot be dropped"),
        ({"retention": "30m"}, "retention must be at least"),
    ],
)
def test_unusable_subject_and_retention_settings_are_refused(changes: dict[str, object], message: str) -> None:
    rules = {"task": "binary", "events": {"click": {"kind": "positive"}}, "window": "10m", "allowed_lateness": "1h"}
    with pytest.raises(ValidationError, match=message):
        UseCasePolicy.model_validate({**rules, **changes})
