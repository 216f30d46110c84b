"""API keys: what a key looks like, how it is stored, and what a presented key may do.

A key is `ll_<key_id>_<secret>`. The key id is public (it names the key in lists and logs); only
the SHA-256 of the secret is stored. The secret is 32 random bytes, so a fast hash is enough: there
is nothing to brute-force, unlike a password. Comparison is constant-time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PREFIX = "ll"
_KEY = re.compile(r"^ll_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class Scope(enum.StrEnum):
    INGEST = "ingest"  # POST predictions and events
    READ = "read"  # datasets, lineage
    OPS = "ops"  # feedback-loop figures, /metrics, the API schema
    ADMIN = "admin"  # keys


@dataclass(frozen=True)
class NewKey:
    key_id: str
    secret_hash: str
    token: str  # shown once, never stored


def new_key() -> NewKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, digest(secret), f"{PREFIX}_{key_id}_{secret}")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """Scopes as stored or given on the command line; an unknown name is a ValueError."""
    return frozenset(Scope(value.strip()) for value in values if value.strip())


@dataclass(frozen=True)
class ActiveKey:
    key_id: str
    name: str
    secret_hash: str
    scopes: frozenset[Scope]


class Denied(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status  # 401: no valid key; 403: a valid key without the scope
        self.reason = reason


@dataclass(frozen=True)
class KeySet:
    """The keys that open the API. `enforced` is false only while no key was ever created and auth
    is not required: a fresh local install is open, and says so in its log."""

    active: Mapping[str, ActiveKey]
    enforced: bool

    def authorize(self, token: str | None, scope: Scope | None) -> ActiveKey | None:
        """The key that grants `scope` (None: any valid key), None when auth is not enforced;
        Denied otherwise."""
        if not self.enforced:
            return None
        if not token:
            raise Denied(401, "an API key is required: Authorization: Bearer <key>, or X-API-Key")
        match = _KEY.match(token)
        key = self.active.get(match.group(1)) if match else None
        # Hash and compare even for an unknown key id, so that timing does not tell ids apart.
        presented = digest(match.group(2) if match else token)
        if not hmac.compare_digest(presented, key.secret_hash if key else digest("")) or key is None:
            raise Denied(401, "unknown or revoked API key")
        if scope is not None and scope not in key.scopes:
            raise Denied(403, f"key {key.key_id} ({key.name}) lacks the {scope.value!r} scope")
        return key


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    kind, _, value = headers.get("authorization", "").partition(" ")
    if kind.lower() == "bearer":
        return value.strip()
    return headers.get("x-api-key")  # also beside another scheme, e.g. Basic added by a proxy
