"""Who may call what: the API keys in force, refreshed from the store in the background, checked
against the scope each route needs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import Request

from service.api.errors import BadRequest, problem
from service.auth.keys import ActiveKey, Denied, KeySet, Scope, presented_token
from service.config import Settings
from service.log_once import RepeatingLog
from service.store import api_keys
from service.store.database import Database, failure_reason

log = logging.getLogger(__name__)


class Guard:
    """Keys are read from the store at start and every `auth_refresh`: a key created or revoked
    with `labelloop keys` (another process) takes effect within that interval."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.required = settings.auth == "required"
        self.refresh_interval = settings.auth_refresh.total_seconds()
        self.db = db
        self.keys = KeySet({}, enforced=True)  # closed until loaded
        self._loading = asyncio.Lock()  # a refresh read before a revoke must not land after it
        self._refresh_log = RepeatingLog(log)

    async def load(self) -> None:
        async with self._loading, self.db.read() as conn:
            self.keys = await api_keys.load_keyset(conn, self.required)

    async def reload_after_change(self) -> None:
        """After a key was created or revoked here: at once if the store answers, else within
        auth_refresh (the change itself is committed; its answer must not be an error)."""
        try:
            await self.load()
        except Exception as exc:
            log.warning("API keys not reloaded after a change (%s); the refresh will", failure_reason(exc))

    async def run_refresh(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.load()
            except Exception as exc:  # keep the keys in force
                self._refresh_log.failed(
                    "refresh", "API keys not refreshed, the loaded ones stay in force: %s", failure_reason(exc)
                )
            else:
                self._refresh_log.recovered("refresh", "API keys refreshed again")

    def authorize(self, request: Request, scope: Scope | None) -> ActiveKey | None:
        """The caller's key if it grants `scope` (None: any valid key); 401/403 otherwise."""
        try:
            if scope is Scope.ADMIN and not self.keys.enforced:
                # Open mode lets anyone ingest and read, never mint keys: the first comes from the CLI.
                raise Denied(401, "no API key exists yet: create the first with `labelloop keys create --scope admin`")
            return self.keys.authorize(presented_token(request.headers), scope)
        except Denied as exc:
            error = "unauthorized" if exc.status == 401 else "forbidden"
            headers = {"WWW-Authenticate": 'Bearer realm="labelloop"'} if exc.status == 401 else None
            raise BadRequest(exc.status, error, [problem(["header", "authorization"], exc.reason)], headers) from exc


def requires(scope: Scope | None) -> Callable[[Request], Awaitable[ActiveKey | None]]:
    """A route dependency, solved before the route's parameters are validated (a caller without a
    key learns nothing of them); its value is the caller's key. Async, so FastAPI does not run it
    in its thread pool."""

    async def check(request: Request) -> ActiveKey | None:
        guard: Guard = request.app.state.runtime.guard
        return guard.authorize(request, scope)

    return check
