"""GET routes: lineage of one prediction, the trainer dataset, the feedback-loop figures."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import AwareDatetime

from service.api.deps import RuntimeDep
from service.api.errors import BadRequest, problem
from service.store import queries

router = APIRouter(prefix="/v1")

PAGE = 5000
_JSON_AT = [i for i, c in enumerate(queries.DATASET_COLUMNS) if c in queries.JSON_COLUMNS]
_SEQ_AT = queries.DATASET_COLUMNS.index("seq")


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


@router.get("/predictions/{prediction_id}", tags=["lineage"])
async def get_prediction(prediction_id: str, runtime: RuntimeDep) -> Response:
    """The prediction, every event about it and each revision of its label: its lineage."""
    async with runtime.db.read() as conn:
        found = await queries.lineage(conn, prediction_id)
    if found is None:
        raise BadRequest(404, "not_found", [problem(["path", "prediction_id"], f"no prediction {prediction_id!r}")])
    return _json(found)


def _jsonl(page: list[tuple[Any, ...]]) -> bytes:
    lines = []
    for row in page:
        values = list(row)
        for i in _JSON_AT:
            if values[i] is not None:
                values[i] = orjson.Fragment(values[i])  # already JSON text
        lines.append(orjson.dumps(dict(zip(queries.DATASET_COLUMNS, values, strict=True))))
    lines.append(b"")
    return b"\n".join(lines)


def _csv(page: list[tuple[Any, ...]]) -> bytes:
    """JSON columns as their JSON text, times as in JSONL (RFC 3339), None as an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerows(
        ["" if v is None else v.isoformat() if isinstance(v, datetime) else v for v in row] for row in page
    )
    return out.getvalue().encode()


@router.get("/datasets/{use_case}", tags=["dataset"])
async def get_dataset(
    use_case: str,
    runtime: RuntimeDep,
    since: Annotated[int, Query(ge=0, description="Only rows changed after this seq.")] = 0,
    limit: Annotated[int | None, Query(ge=1)] = None,
    model: str | None = None,
    model_version: str | None = None,
    served_from: AwareDatetime | None = None,
    served_to: AwareDatetime | None = None,
    final_only: bool = False,
    format: Literal["jsonl", "csv"] = "jsonl",
) -> StreamingResponse:
    """Labeled rows in seq order, streamed page by page in constant memory. Keep the last row's
    `seq` and pass it as `since` to pull only what changed: new labels, revisions, newly final."""
    if use_case not in runtime.policies.use_cases:
        raise BadRequest(
            404,
            "not_found",
            [problem(["path", "use_case"], f"unknown use case; known: {sorted(runtime.policies.use_cases)}")],
        )
    filters = queries.DatasetFilter(
        use_case=use_case,
        since=since,
        model=model,
        model_version=model_version,
        served_from=served_from,
        served_to=served_to,
        final_only=final_only,
    )

    async def rows() -> AsyncIterator[bytes]:
        if format == "csv":
            yield ",".join(queries.DATASET_COLUMNS).encode() + b"\r\n"
        after, remaining = since, limit
        while remaining is None or remaining > 0:
            size = PAGE if remaining is None else min(PAGE, remaining)
            async with runtime.db.read() as conn:
                page = await queries.dataset_page(conn, filters, after, size)
            if not page:
                return
            yield _csv(page) if format == "csv" else _jsonl(page)
            after = page[-1][_SEQ_AT]
            if remaining is not None:
                remaining -= len(page)
            if len(page) < size:
                return

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(rows(), media_type=media)


@router.get("/metrics/feedback-loop", tags=["metrics"])
async def get_feedback_loop(
    runtime: RuntimeDep, use_case: str | None = None, since: AwareDatetime | None = None
) -> Response:
    """Per use case and event type: feedback delay quantiles, label mix, pending, coverage, late
    events, revisions, clock skew. `since` selects predictions served from that hour on."""
    if use_case is not None and use_case not in runtime.policies.use_cases:
        raise BadRequest(
            404,
            "not_found",
            [problem(["query", "use_case"], f"unknown use case; known: {sorted(runtime.policies.use_cases)}")],
        )
    async with runtime.db.read() as conn:
        report = await queries.feedback_loop(conn, use_case, since, sorted(runtime.policies.use_cases))
    return _json(report)
