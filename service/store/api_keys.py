"""Storing API keys; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth.keys import ActiveKey, KeySet, NewKey, Scope, new_key, parse_scopes
from service.store.tables import api_keys


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None


async def create(conn: AsyncConnection, name: str, scopes: Collection[Scope], now: datetime) -> NewKey:
    if not scopes:
        raise ValueError("a key needs at least one scope")
    key = new_key()
    await conn.execute(
        api_keys.insert().values(
            key_id=key.key_id,
            name=name,
            scopes=",".join(sorted(scope.value for scope in scopes)),
            secret_hash=key.secret_hash,
            created_at=now,
        )
    )
    return key


async def list_keys(conn: AsyncConnection) -> list[KeyInfo]:
    rows = await conn.execute(select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id))
    return [
        KeyInfo(row.key_id, row.name, parse_scopes(row.scopes.split(",")), row.created_at, row.revoked_at)
        for row in rows
    ]


async def revoke(conn: AsyncConnection, key_id: str, now: datetime) -> bool:
    """True when the key existed and was active."""
    result = await conn.execute(
        update(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return result.rowcount == 1


async def load_keyset(conn: AsyncConnection, required: bool) -> KeySet:
    ever_created = (await conn.execute(select(func.count()).select_from(api_keys))).scalar_one() > 0
    rows = await conn.execute(
        select(api_keys.c.key_id, api_keys.c.name, api_keys.c.secret_hash, api_keys.c.scopes).where(
            api_keys.c.revoked_at.is_(None)
        )
    )
    active = {
        row.key_id: ActiveKey(row.key_id, row.name, row.secret_hash, parse_scopes(row.scopes.split(",")))
        for row in rows
    }
    return KeySet(active, enforced=required or ever_created)
