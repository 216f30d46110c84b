"""Erasure of a subject's data, and the audit of erasures and retention purges (admin scope)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from service.api.auth import requires
from service.api.deps import RuntimeDep
from service.api.errors import responses
from service.auth.keys import ActiveKey, Scope
from service.contract import Id
from service.store import erasure

router = APIRouter(prefix="/v1", tags=["privacy"])


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


_ADMIN = responses(401, 403, 422, 503, said={403: "The key lacks the admin scope."})


@router.delete("/subjects/{subject_id}", responses=_ADMIN)
async def erase_subject(
    runtime: RuntimeDep, key: Annotated[ActiveKey | None, Depends(requires(Scope.ADMIN))], subject_id: Id
) -> Response:
    """Erase every prediction about this subject (the policies' subject field), with its events and
    labels; answered once committed, with the counts. Dataset rows the trainers had get tombstones
    (status `erased`) at new seqs. Aggregates stay. Erasing an unknown or erased subject erases nothing."""
    by = key.key_id if key is not None else "open"
    gone = await runtime.erase_subject(subject_id, by)
    return _json(
        {"erasure_id": gone.erasure_id, "predictions": gone.predictions, "events": gone.events, "labels": gone.labels}
    )


@router.get("/erasures", dependencies=[Depends(requires(Scope.ADMIN))], responses=_ADMIN)
async def list_erasures(runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    """The latest erasures and purges, newest first: who (API key id), when, how many rows; never whose."""
    async with runtime.db.read() as conn:
        rows = await erasure.audit_log(conn, limit)
    return _json({"erasures": rows})
