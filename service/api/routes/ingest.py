"""POST /v1/predictions and /v1/events: validate, apply in one transaction, answer once committed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from service.api.body import read_records
from service.api.deps import RuntimeDep
from service.api.runtime import Runtime
from service.api.schemas import Accepted, EventBatch, EventIn, PredictionBatch, PredictionIn
from service.store.ingest import LabelContext, UnitResult, ingest_events, ingest_predictions

router = APIRouter(prefix="/v1", tags=["ingest"])


def _body_schema(item: type[Any], batch: type[Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"oneOf": [item.model_json_schema(), batch.model_json_schema()]}}
            },
        }
    }


_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": Accepted, "description": "Stored durably (committed)."},
    400: {"description": "Malformed JSON."},
    409: {"description": "An id already stored with different content."},
    413: {"description": "Batch larger than the limit."},
    422: {"description": "Invalid record: the body names the field and the reason."},
}


async def _ingest(
    request: Request,
    runtime: Runtime,
    model: type[PredictionIn] | type[EventIn],
    collection: str,
    apply: Callable[[AsyncConnection, LabelContext, Any, datetime], Awaitable[UnitResult]],
) -> JSONResponse:
    items = await read_records(request, model, collection, runtime.settings.max_batch)
    records = [item.to_record() for item in items]
    async with runtime.db.write() as conn:
        unit = await apply(conn, runtime.context, records, runtime.clock())
    # Past this point the transaction has committed: the 202 promises durable records.
    runtime.committed(unit)
    runtime.telemetry.record(collection, unit.ingest.accepted, unit.ingest.duplicates)
    return JSONResponse({"accepted": unit.ingest.accepted, "duplicates": unit.ingest.duplicates}, status_code=202)


@router.post(
    "/predictions",
    status_code=202,
    response_model=Accepted,
    responses=_RESPONSES,
    openapi_extra=_body_schema(PredictionIn, PredictionBatch),
)
async def post_predictions(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Log served predictions: one object or {"predictions": [...]}."""
    return await _ingest(request, runtime, PredictionIn, "predictions", ingest_predictions)


@router.post(
    "/events",
    status_code=202,
    response_model=Accepted,
    responses=_RESPONSES,
    openapi_extra=_body_schema(EventIn, EventBatch),
)
async def post_events(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Report behavioral events and explicit labels: one object or {"events": [...]}."""
    return await _ingest(request, runtime, EventIn, "events", ingest_events)
