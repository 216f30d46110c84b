from __future__ import annotations

import asyncio
from typing import Literal

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from service.api.auth import requires
from service.api.deps import RuntimeDep
from service.api.errors import Problem, problem, responses
from service.auth.keys import Scope
from service.store.database import failure_reason

READY_TIMEOUT_S = 2.0

router = APIRouter(tags=["ops"])


class Unready(BaseModel):
    status: Literal["unavailable"]
    detail: list[Problem]


@router.get("/healthz", responses=responses(503, said={503: "The store does not answer."}))
async def healthz(runtime: RuntimeDep) -> dict[str, str]:
    async with runtime.db.read() as conn:
        await conn.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {"model": Unready, "description": "Writes cannot succeed now: the detail says why."},
    },
)
async def readyz(runtime: RuntimeDep) -> Response:
    """Ready while the store answers, (embedded mode) the last write succeeded, (SQLite) the
    database's filesystem has room and (Kafka mode) the broker has our topics' partition leaders:
    a load balancer stops sending writes that cannot succeed. The window sweep keeps writing
    meanwhile, so readiness comes back by itself once the store does."""
    part, fault = "store", runtime.write_fault or runtime.db.disk_fault()
    if fault is None:
        part, fault = "kafka", await runtime.sink.fault()
    if fault is None:
        part = "store"
        try:
            async with asyncio.timeout(READY_TIMEOUT_S), runtime.db.read() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            fault = failure_reason(exc)
    if fault is not None:
        body = {"status": "unavailable", "detail": [problem([part], fault)]}
        return Response(orjson.dumps(body), status_code=503, media_type="application/json")
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/metrics",
    dependencies=[Depends(requires(Scope.OPS))],
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition.",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        },
        **responses(401, 403, 503, said={403: "The key lacks the ops scope."}),
    },
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus exposition of this process, with gauges read from the store."""
    await runtime.refresh_gauges()
    return Response(generate_latest(runtime.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
