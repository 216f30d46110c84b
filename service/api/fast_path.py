"""POST /v1/predictions and /v1/events go straight to their endpoints, ahead of FastAPI's routing.

Per single-record request, routing, the exception middleware and the endpoint wrapper cost about
as much CPU as the endpoint itself (cProfile of `labelloop serve` under load). The routes stay
registered with FastAPI for the OpenAPI document and for anything this does not take (another
method, a trailing slash); what the endpoints raise is answered as FastAPI's handlers would.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import errors


class IngestFastPath:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = {r.path: r for r in routes if isinstance(r, APIRoute) and r.methods == {"POST"}}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # the access log names the template, as for a routed request
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            answer = errors.answer(request, exc)
            if answer is None:
                raise  # a fault: service/api/faults.py answers it
            response = answer
        await response(scope, receive, send)
