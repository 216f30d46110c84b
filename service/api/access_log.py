"""One JSON line per request: method, route, status, duration, request id (X-Request-ID, echoed
back; generated when absent). The path template is logged, not the path: ids stay out of the log."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id

log = logging.getLogger("labelloop.access")
_ACCEPTED_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _ACCEPTED_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if log.isEnabledFor(logging.INFO):
                route = scope.get("route")
                fields = {
                    "method": scope["method"],
                    "route": getattr(route, "path", None) or "unmatched",
                    "status": status,
                    "duration_ms": round(1000 * (time.perf_counter() - started), 2),
                }
                log.info("%s %s %s", fields["method"], fields["route"], status, extra={"fields": fields})
            request_id.reset(token)
