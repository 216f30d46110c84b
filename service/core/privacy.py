"""Features a policy keeps out of the store, applied to a record before anything stores or queues it."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Sequence

import orjson

from service.core.model import PredictionRecord
from service.core.policy import PolicySet

HASHED = "hmac-sha256:"


def hashed(value: object, key: bytes) -> str:
    """A value's keyed hash. Idempotent: a value already hashed stays as it is, so a record scrubbed
    by the API and again by a joiner (or replayed) is the same record."""
    if isinstance(value, str) and value.startswith(HASHED):
        return value
    return HASHED + hmac.new(key, orjson.dumps(value), hashlib.sha256).hexdigest()


def scrub(policies: PolicySet, records: Sequence[PredictionRecord], key: bytes | None) -> list[PredictionRecord]:
    """The records with their use case's dropped features removed and hashed ones replaced; a
    record of an unknown use case is left for validation to refuse."""
    out = []
    for record in records:
        policy = policies.use_cases.get(record.use_case)
        rule = policy.features if policy is not None else None
        if rule is None or record.features is None or not (rule.drop or rule.hash):
            out.append(record)
            continue
        if rule.hash and key is None:
            raise ValueError("a policy hashes features but no LABELLOOP_FEATURE_HASH_KEY is set")
        features = {
            name: hashed(value, key) if name in rule.hash and key is not None else value
            for name, value in record.features.items()
            if name not in rule.drop
        }
        out.append(dataclasses.replace(record, features=features))
    return out
