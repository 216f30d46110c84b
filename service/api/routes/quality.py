"""GET /v1/metrics/quality: the model's quality against its labels, per model, version and served
bucket, from the sums kept as labels change (service/store/quality.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from service.api.auth import requires
from service.api.deps import RuntimeDep
from service.api.errors import BadRequest, problem, responses
from service.auth.keys import Scope
from service.contract import Instant, Name
from service.store import quality
from service.store.stats import served_hour

DEFAULT_BUCKETS = {"1h": 24, "1d": 30}  # without `since`: the last day hourly, the last 30 days daily
MAX_BUCKETS = {"1h": 7 * 24, "1d": 366}

router = APIRouter(prefix="/v1/metrics", tags=["metrics"], dependencies=[Depends(requires(Scope.OPS))])


def _invalid(field: str, msg: str) -> BadRequest:
    return BadRequest(422, "validation_error", [problem(["query", field], msg)])


def _period_to(bucket: quality.Bucket, until: datetime) -> int:
    """The first bucket after `until` (a bucket that starts at `until` is after it)."""
    hours = quality.HOURS[bucket]
    period = served_hour(until) // hours
    return period + 1 if quality.period_start(bucket, period) < until else period


@router.get("/quality", responses=responses(401, 403, 404, 422, 503, said={403: "The key lacks the ops scope."}))
async def get_quality(
    runtime: RuntimeDep,
    use_case: str,
    by: Annotated[
        Literal["model_version", "model"], Query(description="Figures per model and version, or per model.")
    ] = "model_version",
    bucket: Annotated[Literal["1h", "1d"], Query(description="Predictions by served hour or day.")] = "1d",
    since: Annotated[
        Instant | None, Query(description="From this bucket on; default: 24 hours or 30 days back.")
    ] = None,
    until: Annotated[Instant | None, Query(description="Up to the bucket holding this; default: now.")] = None,
    model: Name | None = None,
    model_version: Name | None = None,
) -> Response:
    """Per model (and version) and served bucket: binary use cases count, positive rate, mean score,
    log loss, Brier score, ROC AUC (binned, within `roc_auc_max_error`) and a calibration table;
    regression ones count, MAE, RMSE and bias (estimate minus label). Over final labels, and apart
    over provisional ones. The policy names where the output holds the score (`score:`) or estimate
    (`estimate:`); predictions without one are not counted."""
    policy = runtime.policies.use_cases.get(use_case)
    if policy is None:
        known = sorted(runtime.policies.use_cases)
        raise BadRequest(404, "not_found", [problem(["query", "use_case"], f"unknown use case; known: {known}")])
    named = "score" if policy.task == "binary" else "estimate"
    if policy.output_path is None:
        raise _invalid("use_case", f"its policy names no {named} (`{named}: output.<key>`): nothing to score")
    if since is not None and until is not None and until <= since:
        raise _invalid("until", "until must be after since")
    period_to = _period_to(bucket, until or runtime.clock())
    period_from = period_to - DEFAULT_BUCKETS[bucket] if since is None else served_hour(since) // quality.HOURS[bucket]
    if period_to - period_from > MAX_BUCKETS[bucket]:
        raise _invalid("since", f"at most {MAX_BUCKETS[bucket]} buckets of {bucket} at a time")
    selection = quality.Selection(use_case, bucket, period_from, period_to, by == "model_version", model, model_version)
    async with runtime.db.read() as conn:
        models = await quality.report(conn, policy, selection)
    body = {
        "use_case": use_case,
        "task": policy.task,
        named: policy.score or policy.estimate,
        "by": by,
        "bucket": bucket,
        "served": {
            "from": quality.period_start(bucket, period_from).isoformat(),
            "to": quality.period_start(bucket, period_to).isoformat(),
        },
        "models": models,
    }
    return Response(orjson.dumps(body), media_type="application/json")
