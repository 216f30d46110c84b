"""What escapes a route: a fault of the store answers 503 with Retry-After, anything else 500; both
in the JSON error shape, on a connection that stays usable, logged as one line (not a traceback per
request; the traceback once per kind, at debug level)."""

from __future__ import annotations

import logging
import traceback

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import problem
from service.log_once import RepeatingLog
from service.store.database import store_fault

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5


class Faults:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.reports = RepeatingLog(log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # a stream broke off mid-way: nothing can be answered any more
                raise
            await self._answer(scope, exc, send)

    async def _answer(self, scope: Scope, exc: Exception, send: Send) -> None:
        reason = store_fault(exc)
        # The route's template, not the path: a path holds ids.
        route = f"{scope['method']} {getattr(scope.get('route'), 'path', None) or 'unmatched'}"
        if reason is not None:
            status, error, headers = 503, "store_unavailable", [(b"retry-after", str(RETRY_AFTER_S).encode())]
            msg = f"{reason}; retry after {RETRY_AFTER_S} s (ids make a retry safe: nothing is counted twice)"
            self.reports.failed(f"store:{reason}", "%s answered 503: %s", route, reason)
        else:
            status, error, headers = 500, "internal_error", []
            msg = f"an unexpected {type(exc).__name__}; the server's log has it"
            # The type and where it was raised, not its message: that may quote what a record holds.
            where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            at = f"{where.filename}:{where.lineno}" if where else "?"
            self.reports.failed(
                f"bug:{type(exc).__name__}:{at}", "%s answered 500: %s at %s", route, type(exc).__name__, at
            )
        log.debug("%s", route, exc_info=exc)
        body = orjson.dumps({"error": error, "detail": [problem(["server"], msg)]})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
