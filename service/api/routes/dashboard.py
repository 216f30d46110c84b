"""The operators' dashboard: a static page (HTML, one script, one stylesheet, shipped as package
data) that holds no data. It is open like /healthz; the figures come from the ops-scope JSON routes
(/v1/metrics/..., /v1/advice/window), which the page calls with the key the operator typed, kept in sessionStorage."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter(tags=["dashboard"], include_in_schema=False)

ASSETS = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# Nothing but this origin's own files and API: no inline script, no other origin, no framing.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _asset(name: str) -> bytes:
    return files("service.api").joinpath("static", name).read_bytes()


def _serve(name: str) -> Response:
    return Response(_asset(name), media_type=ASSETS[name], headers=HEADERS)


@router.get("/dashboard")
async def dashboard() -> Response:
    return _serve("dashboard.html")


@router.get("/dashboard/dashboard.js")
async def dashboard_script() -> Response:
    return _serve("dashboard.js")


@router.get("/dashboard/dashboard.css")
async def dashboard_style() -> Response:
    return _serve("dashboard.css")
