"""GET routes: lineage of one prediction, the trainer dataset, the feedback-loop figures."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from service.api.auth import requires
from service.api.deps import RuntimeDep
from service.api.errors import BadRequest, problem, responses
from service.auth.keys import Scope
from service.contract import Id, Instant, Name
from service.store import dataset, feedback, lineage
from service.store.flip import Estimate

router = APIRouter(prefix="/v1")

PAGE = 5000
MAX_SEQ = 2**63 - 1  # a seq is a signed 64-bit integer in the store
_SEQ_AT = dataset.DATASET_COLUMNS.index("seq")


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


_READ = responses(401, 403, 404, 422, 503, said={403: "The key lacks the read scope."})


@router.get(
    "/predictions/{prediction_id}",
    tags=["lineage"],
    dependencies=[Depends(requires(Scope.READ))],
    responses={**_READ, **responses(410)},
)
async def get_prediction(prediction_id: Id, runtime: RuntimeDep) -> Response:
    """The prediction, every event about it and each revision of its label: its lineage."""
    try:
        async with runtime.db.read() as conn:
            found = await lineage.lineage(conn, prediction_id)
    except lineage.Erased:
        raise BadRequest(
            410, "erased", [problem(["path", "prediction_id"], "erased with its subject: nothing about it is kept")]
        ) from None
    if found is None:
        raise BadRequest(404, "not_found", [problem(["path", "prediction_id"], f"no prediction {prediction_id!r}")])
    return _json(found)


Page = tuple[bytes, int, int, bool]  # body, rows, last seq, cut short by the byte budget


async def _jsonl_page(
    conn: AsyncConnection, filters: dataset.DatasetFilter, after: int, size: int, max_bytes: int, flip: Estimate
) -> Page:
    lines, cut = await dataset.dataset_lines(conn, filters, after, size, max_bytes, flip)
    body = "".join(f"{line}\n" for line, _ in lines).encode()
    return body, len(lines), lines[-1][1] if lines else after, cut


async def _csv_page(
    conn: AsyncConnection, filters: dataset.DatasetFilter, after: int, size: int, max_bytes: int, flip: Estimate
) -> Page:
    """JSON columns as their JSON text, served_at as in JSONL, None as an empty cell."""
    page, cut = await dataset.dataset_page(conn, filters, after, size, max_bytes, flip)
    out = io.StringIO()
    csv.writer(out).writerows(["" if v is None else v for v in row] for row in page)
    return out.getvalue().encode(), len(page), page[-1][_SEQ_AT] if page else after, cut


_ROWS = {"schema": {"type": "string"}}


async def _estimate(runtime: RuntimeDep, conn: AsyncConnection, f: dataset.DatasetFilter) -> Estimate:
    """p_flip from the curve now; each row's wait up to the watermark now, or (as_of) the one
    recorded at that seq: the dataset's rows as sure as they were then."""
    if f.final_only:  # no provisional row to estimate
        return Estimate(None, None)
    use_case, as_of = f.use_case, f.as_of
    now = await feedback.current_watermark(
        conn, runtime.clock(), runtime.watermark_times, runtime.settings.kafka_topics
    )
    mark = now if as_of is None else await dataset.watermark_at(conn, use_case, as_of)
    curve = await runtime.flip_curves.curve(conn, use_case, runtime.policies.use_cases[use_case], now)
    return Estimate(curve, mark)


@router.get(
    "/datasets/{use_case}",
    tags=["dataset"],
    dependencies=[Depends(requires(Scope.READ))],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One row per labeled prediction: JSON lines, or CSV with a header row.",
            "content": {"application/x-ndjson": _ROWS, "text/csv": _ROWS},
        },
        **_READ,
    },
)
async def get_dataset(
    use_case: str,
    runtime: RuntimeDep,
    since: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Only rows changed after this seq.")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    model: Name | None = None,
    model_version: Name | None = None,
    served_from: Instant | None = None,
    served_to: Instant | None = None,
    final_only: bool = False,
    format: Literal["jsonl", "csv"] = "jsonl",
    as_of: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="The dataset exactly as it stood at this seq.")
    ] = None,
) -> StreamingResponse:
    """Labeled rows in seq order, streamed page by page in constant memory. Keep the last row's
    `seq` and pass it as `since` to pull only what changed: new labels, revisions, newly final.
    X-Labelloop-Seq: the seq the answer reflects (record it, pass it as `as_of` to get the same
    rows again); X-Labelloop-Policy: the digest of the use case's policy in force."""
    if use_case not in runtime.policies.use_cases:
        raise BadRequest(
            404,
            "not_found",
            [problem(["path", "use_case"], f"unknown use case; known: {sorted(runtime.policies.use_cases)}")],
        )
    filters = dataset.DatasetFilter(
        use_case=use_case,
        since=since,
        model=model,
        model_version=model_version,
        served_from=served_from,
        served_to=served_to,
        final_only=final_only,
        as_of=as_of,
    )
    async with runtime.db.read() as conn:
        reflected = await dataset.last_seq(conn, use_case)
        if as_of is not None and as_of > reflected:
            detail = [problem(["query", "as_of"], f"beyond the last seq, {reflected}: that dataset does not exist yet")]
            raise BadRequest(422, "validation_error", detail)
        flip = await _estimate(runtime, conn, filters)
    headers = {
        "X-Labelloop-Seq": str(reflected if as_of is None else as_of),
        "X-Labelloop-Policy": runtime.policies.use_cases[use_case].digest,
    }

    fetch = _csv_page if format == "csv" else _jsonl_page
    page_bytes = runtime.settings.dataset_page_bytes

    async def page(after: int, size: int) -> Page:
        async with runtime.db.read() as conn:
            return await fetch(conn, filters, after, size, page_bytes, flip)

    # The first page before the response starts: a store that cannot answer is a 503, not a 200
    # that breaks off. Later pages can only break the stream off.
    first_size = PAGE if limit is None else min(PAGE, limit)
    first = await page(since, first_size)

    async def rows() -> AsyncIterator[bytes]:
        if format == "csv":
            yield ",".join(dataset.DATASET_COLUMNS).encode() + b"\r\n"
        (body, count, after, cut), size, remaining = first, first_size, limit
        while True:
            if count:
                yield body
            if remaining is not None:
                remaining -= count
            if (count < size and not cut) or (remaining is not None and remaining <= 0):
                return
            size = PAGE if remaining is None else min(PAGE, remaining)
            body, count, after, cut = await page(after, size)

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(rows(), media_type=media, headers=headers)


def _known_use_case(runtime: RuntimeDep, use_case: str | None) -> None:
    if use_case is not None and use_case not in runtime.policies.use_cases:
        raise BadRequest(
            404,
            "not_found",
            [problem(["query", "use_case"], f"unknown use case; known: {sorted(runtime.policies.use_cases)}")],
        )


def _range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and until <= since:
        raise BadRequest(422, "validation_error", [problem(["query", "until"], "until must be after since")])


_OPS = responses(401, 403, 404, 422, 503, said={403: "The key lacks the ops scope."})


@router.get("/metrics/feedback-loop", tags=["metrics"], dependencies=[Depends(requires(Scope.OPS))], responses=_OPS)
async def get_feedback_loop(
    runtime: RuntimeDep,
    use_case: str | None = None,
    since: Annotated[Instant | None, Query(description="Predictions served from this hour on.")] = None,
    until: Annotated[Instant | None, Query(description="Predictions served before this (to the hour).")] = None,
    trend: Annotated[
        Literal["hour", "day"] | None,
        Query(description="Add each event type's delay histogram and the figures per served hour or day."),
    ] = None,
) -> Response:
    """Per use case and event type: feedback delay quantiles, label mix, pending, coverage, late
    events, revisions, clock skew. `since` and `until` select predictions by served hour."""
    _known_use_case(runtime, use_case)
    _range(since, until)
    try:
        async with runtime.db.read() as conn:
            report = await feedback.feedback_loop(
                conn, use_case, since, sorted(runtime.policies.use_cases), until=until, trend=trend
            )
    except feedback.RangeTooLong as exc:
        raise BadRequest(422, "validation_error", [problem(["query", "trend"], str(exc))]) from None
    return _json(report)


@router.get("/metrics/models", tags=["metrics"], dependencies=[Depends(requires(Scope.OPS))], responses=_OPS)
async def get_models(
    runtime: RuntimeDep,
    use_case: str | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
    model: str | None = None,
    model_version: str | None = None,
) -> Response:
    """Per use case, model and version: served, current labels by kind, coverage, pending; counted
    from the predictions (the feedback-loop counters have no model dimension)."""
    _known_use_case(runtime, use_case)
    _range(since, until)
    async with runtime.db.read() as conn:
        report = await feedback.by_model(conn, feedback.Served.between(use_case, since, until), model, model_version)
    return _json(report)


@router.get("/metrics/pipeline", tags=["metrics"], dependencies=[Depends(requires(Scope.OPS))], responses=_OPS)
async def get_pipeline(runtime: RuntimeDep) -> Response:
    """The watermark and its lag; in Kafka mode each partition's progress; the dead letters."""
    async with runtime.db.read() as conn:
        report = await feedback.pipeline(conn, runtime.clock(), runtime.watermark_times, runtime.settings.kafka_topics)
    return _json(report)
