"""`labelloop keys create | list | revoke`: straight to the store, so the first admin key needs no API."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.auth.keys import parse_scopes
from service.clock import utcnow
from service.config import Settings
from service.store import api_keys, migrate
from service.store.database import create_engine


async def _create(engine: AsyncEngine, args: argparse.Namespace) -> int:
    output: Path | None = args.output
    # The file first, created exclusively with its final mode (owner and group may read, never
    # anyone else for a moment): a key is stored only once there is somewhere to keep it.
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640) if output else None
    try:
        async with engine.begin() as conn:
            key = await api_keys.create(conn, args.name, parse_scopes(args.scope), utcnow())
            if fd is not None:
                os.write(fd, (key.token + "\n").encode())
                os.fsync(fd)
    except BaseException:
        if output is not None:
            os.unlink(output)  # ours: created exclusively above
        raise
    finally:
        if fd is not None:
            os.close(fd)
    if output is None:
        print(f"{key.token}\n# key {key.key_id} ({args.name}): shown once, store it now")
    else:
        print(f"key {key.key_id} ({args.name}) written to {output}")
    return 0


async def _list(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        keys = await api_keys.list_keys(conn)
    for info in keys:
        state = f"revoked {info.revoked_at.isoformat()}" if info.revoked_at else "active"
        scopes = ",".join(sorted(info.scopes))
        print(f"{info.key_id}  {info.name}  {scopes}  created {info.created_at.isoformat()}  {state}")
    return 0


async def _revoke(engine: AsyncEngine, key_id: str, settings: Settings) -> int:
    async with engine.begin() as conn:
        revoked = await api_keys.revoke(conn, key_id, utcnow())
    if not revoked:
        print(f"labelloop keys revoke: no active key {key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {key_id}; running servers stop accepting it within {settings.auth_refresh}")
    return 0


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    engine = create_engine(settings.database_url, "labelloop-keys", settings.timeouts)
    try:
        if settings.should_migrate_on_start:  # SQLite: as `serve` would on its first start
            await migrate.upgrade(engine)
        if args.keys_command == "create":
            return await _create(engine, args)
        if args.keys_command == "list":
            return await _list(engine)
        return await _revoke(engine, args.key_id, settings)
    except (OperationalError, ProgrammingError) as exc:
        print(f"labelloop keys: {type(exc.orig).__name__}: {exc.orig} (run `labelloop migrate`?)", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"labelloop keys: {exc}; no key created", file=sys.stderr)
        return 2
    finally:
        await engine.dispose()


def run_keys(settings: Settings, args: argparse.Namespace) -> int:
    if args.keys_command == "create" and args.output is not None and args.output.exists():
        print(f"{args.output} exists: kept, no key created")
        return 0
    return asyncio.run(_run(settings, args))
