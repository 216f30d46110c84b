"""Features a policy keeps out of the store, without I/O."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.core.model import PredictionRecord
from service.core.policy import FeaturePolicy, PolicySet, UseCasePolicy
from service.core.privacy import HASHED, scrub

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
