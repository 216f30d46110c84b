"""What a policy says about personal data, applied to a record before anything stores or queues
it: the subject it names, and the features kept out of the store."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Sequence

import orjson

from service.core.model import PredictionRecord
from service.core.policy import PolicySet, UseCasePolicy

HASHED = "hmac-sha256:"


def hashed(value: object, key: bytes) -> str:
    """A value's keyed hash. Idempotent: a value already hashed stays as it is, so a record scrubbed
    by the API and again by a joiner (or replayed) is the same record."""
    if isinstance(value, str) and value.startswith(HASHED):
        return value
    return HASHED + hmac.new(key, orjson.dumps(value), hashlib.sha256).hexdigest()


def subject_forms(subject_id: str, key: bytes | None) -> list[str]:
    """What the store may hold for this subject: the id itself, and its keyed hash (a hashed
    subject feature), also of the number a decimal id stands for."""
    forms = [subject_id]
    if key is not None:
        forms.append(hashed(subject_id, key))
        if subject_id.isdecimal():
            forms.append(hashed(int(subject_id), key))
    return forms


def _subject(policy: UseCasePolicy, record: PredictionRecord, key: bytes | None) -> str | None:
    """The subject the policy's field names, when the record does not name one itself; the keyed
    hash of it when that field is a hashed feature."""
    name = policy.subject_key
    if record.subject_id is not None or name is None:
        return record.subject_id
    in_features = policy.subject.startswith("features.")
    holder = record.features if in_features else record.context
    value = None if holder is None else holder.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None  # absent, or not an id: the prediction names no subject
    if in_features and name in policy.features.hash and key is not None:
        return hashed(value, key)
    return str(value)


def scrub(policies: PolicySet, records: Sequence[PredictionRecord], key: bytes | None) -> list[PredictionRecord]:
    """The records with their subject filled in from the policy's subject field, their use case's
    dropped features removed and hashed ones replaced (a hashed subject feature makes a hashed
    subject_id); a record of an unknown use case is left for validation to refuse."""
    out = []
    for record in records:
        policy = policies.use_cases.get(record.use_case)
        if policy is None:
            out.append(record)
            continue
        rule = policy.features
        if rule.hash and key is None:
            raise ValueError("a policy hashes features but no LABELLOOP_FEATURE_HASH_KEY is set")
        subject = _subject(policy, record, key)
        if record.features is None or not (rule.drop or rule.hash):
            out.append(record if subject == record.subject_id else dataclasses.replace(record, subject_id=subject))
            continue
        features = {
            name: hashed(value, key) if name in rule.hash and key is not None else value
            for name, value in record.features.items()
            if name not in rule.drop
        }
        out.append(dataclasses.replace(record, subject_id=subject, features=features))
    return out
