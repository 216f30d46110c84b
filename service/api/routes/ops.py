from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service.api.auth import requires
from service.api.deps import RuntimeDep
from service.auth.keys import Scope

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz(runtime: RuntimeDep) -> dict[str, str]:
    async with runtime.db.read() as conn:
        await conn.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get("/metrics", dependencies=[Depends(requires(Scope.OPS))])
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus exposition of this process, with gauges read from the store."""
    await runtime.refresh_gauges()
    return Response(generate_latest(runtime.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
