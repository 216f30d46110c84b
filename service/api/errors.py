"""Every 4xx answers JSON naming the field and the reason:
{"error": "...", "detail": [{"loc": [...], "field": "events[3].type", "msg": "..."}]}."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.group_commit import Overloaded
from service.core.validation import InvalidRecord
from service.kafka.errors import BrokerUnavailable
from service.store.records import RecordConflict


class BadRequest(Exception):
    def __init__(
        self, status: int, error: str, detail: list[dict[str, Any]], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


def field_path(loc: Sequence[str | int]) -> str:
    path = ""
    for part in loc:
        if part == "body" and not path:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def problem(loc: Sequence[str | int], msg: str, **extra: Any) -> dict[str, Any]:
    return {"loc": list(loc), "field": field_path(loc), "msg": msg, **extra}


class Problem(BaseModel):
    """One entry of an error's detail, as problem() builds it; some carry more (type, ids)."""

    model_config = ConfigDict(extra="allow")
    loc: list[str | int]
    field: str
    msg: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx of the API."""

    error: str
    detail: list[Problem]


_MEANING = {
    400: "Malformed JSON: duplicate keys, integers beyond 64 bits, NaN, bytes that are not UTF-8.",
    401: "No valid API key.",
    403: "The key lacks the scope this route needs.",
    404: "Nothing by that name.",
    409: "An id already stored with different content.",
    410: "Erased with its subject: nothing about it is kept.",
    413: "Body or batch larger than the limit.",
    415: "The body is not application/json.",
    422: "Invalid input: the body names the field and the reason.",
    503: "The store cannot take the request now (or, in Kafka mode, the broker); retry after Retry-After.",
}


def responses(*statuses: int, said: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The error answers a route documents (`responses=` of the route), each with ErrorBody; `said`
    words a status for that route."""
    said = said or {}
    return {status: {"model": ErrorBody, "description": said.get(status, _MEANING[status])} for status in statuses}


def from_validation_error(exc: ValidationError | RequestValidationError, prefix: Sequence[str | int]) -> BadRequest:
    detail = [problem([*prefix, *err["loc"]], err["msg"], type=err["type"]) for err in exc.errors()]
    return BadRequest(422, "validation_error", detail)


_HTTP_ERRORS = {404: "not_found", 405: "method_not_allowed"}


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """The router's own answers (no such route, wrong method) in the same shape as ours."""
    error = _HTTP_ERRORS.get(exc.status_code, "http_error")
    detail = [problem(["path"], f"{request.method} {request.url.path}: {exc.detail}")]
    return JSONResponse({"error": error, "detail": detail}, status_code=exc.status_code, headers=exc.headers)


def _bad_request(_: Request, exc: BadRequest) -> JSONResponse:
    return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=exc.headers)


def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    detail = [problem(err["loc"], err["msg"], type=err["type"]) for err in exc.errors()]
    return JSONResponse({"error": "validation_error", "detail": detail}, status_code=422)


def _conflict(_: Request, exc: RecordConflict) -> JSONResponse:
    detail = [problem(["body", exc.field], exc.reason, ids=exc.ids)]
    return JSONResponse({"error": "conflict", "detail": detail}, status_code=409)


def _broker_unavailable(_: Request, exc: BrokerUnavailable) -> JSONResponse:
    detail = [problem(["kafka"], f"{exc}; nothing was accepted, retry the whole request")]
    return JSONResponse(
        {"error": "broker_unavailable", "detail": detail}, status_code=503, headers={"Retry-After": "5"}
    )


def _overloaded(_: Request, exc: Overloaded) -> JSONResponse:
    detail = [problem(["server"], f"overloaded: {exc}; nothing was stored, retry after 1 s")]
    return JSONResponse({"error": "overloaded", "detail": detail}, status_code=503, headers={"Retry-After": "1"})


def _invalid_record(request: Request, exc: InvalidRecord) -> JSONResponse:
    collection, index, field = exc.loc
    loc: list[str | int] = ["body", collection, index, field]
    if not getattr(request.state, "batch", True):
        loc = ["body", field]
    return JSONResponse({"error": "validation_error", "detail": [problem(loc, exc.reason)]}, status_code=422)


_ANSWERS: dict[type[Exception], Callable[[Request, Any], JSONResponse]] = {
    StarletteHTTPException: _http_error,
    BadRequest: _bad_request,
    RequestValidationError: _request_validation,
    RecordConflict: _conflict,
    BrokerUnavailable: _broker_unavailable,
    Overloaded: _overloaded,
    InvalidRecord: _invalid_record,
}


def answer(request: Request, exc: Exception) -> JSONResponse | None:
    """The JSON answer to an exception a route raised, None for one that is a fault (service/api/faults.py)."""
    for kind in type(exc).__mro__:
        render = _ANSWERS.get(kind)
        if render is not None:
            return render(request, exc)
    return None


def _handler(render: Callable[[Request, Any], JSONResponse]) -> Callable[[Request, Any], Awaitable[JSONResponse]]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:  # async: not run in a thread
        return render(request, exc)

    return handler


def install(app: FastAPI) -> None:
    """The answers of `_ANSWERS` for the routes FastAPI routes (the ingest fast path calls answer())."""
    for kind, render in _ANSWERS.items():
        app.add_exception_handler(kind, _handler(render))
