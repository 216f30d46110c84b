"""POST /v1/predictions and /v1/events: validate, apply in one transaction, answer once committed."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.api.body import body_schema, read_records
from service.api.deps import runtime_of
from service.api.errors import responses
from service.api.sinks import Receipt
from service.auth.keys import Scope
from service.contract import Accepted, EventBatch, EventIn, PredictionBatch, PredictionIn
from service.core.privacy import scrub

router = APIRouter(prefix="/v1", tags=["ingest"])


_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": Accepted, "description": "Durable: committed (embedded) or acknowledged by Kafka."},
    **responses(
        400,
        401,
        403,
        409,
        413,
        415,
        422,
        503,
        said={
            403: "The key lacks the ingest scope.",
            422: "Invalid record: the body names the field and the reason.",
            503: "The store or (Kafka mode) the broker cannot take it now, or the server sheds load: "
            "nothing was stored; retry after Retry-After.",
        },
    ),
}


def _receipt(receipt: Receipt) -> Response:
    body = orjson.dumps({"accepted": receipt.accepted, "duplicates": receipt.duplicates})
    return Response(body, status_code=202, media_type="application/json")


@router.post(
    "/predictions",
    status_code=202,
    response_model=Accepted,
    responses=_RESPONSES,
    openapi_extra=body_schema(PredictionIn, PredictionBatch),
)
async def post_predictions(request: Request) -> Response:
    """Log served predictions: one object or {"predictions": [...]}."""
    # Not dependencies: the hot path skips FastAPI's dependency solving.
    runtime = runtime_of(request)
    runtime.guard.authorize(request, Scope.INGEST)
    items = await read_records(request, PredictionIn, "predictions", runtime.settings)
    now = runtime.clock()
    records = scrub(runtime.policies, [item.to_record(now) for item in items], runtime.settings.hash_key)
    return _receipt(await runtime.sink.put_predictions(records))


@router.post(
    "/events",
    status_code=202,
    response_model=Accepted,
    responses=_RESPONSES,
    openapi_extra=body_schema(EventIn, EventBatch),
)
async def post_events(request: Request) -> Response:
    """Report behavioral events and explicit labels: one object or {"events": [...]}."""
    runtime = runtime_of(request)
    runtime.guard.authorize(request, Scope.INGEST)
    items = await read_records(request, EventIn, "events", runtime.settings)
    now = runtime.clock()
    return _receipt(await runtime.sink.put_events([item.to_record(now) for item in items]))
