"""GET /v1/advice/window: the window a use case needs for a target fake-negative rate."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from service.api.auth import requires
from service.api.deps import RuntimeDep
from service.api.errors import BadRequest, problem, responses
from service.auth.keys import Scope
from service.core.advisor import Curve, CurvePoint, candidate_windows, window_curve
from service.core.policy import EventKind, UseCasePolicy
from service.store.advice import delay_cohorts

MAX_HORIZON_S = 10 * 366 * 86400.0  # ten years: far beyond any window, far below what overflows

router = APIRouter(prefix="/v1/advice", tags=["advice"], dependencies=[Depends(requires(Scope.OPS))])


def _point(point: CurvePoint | None) -> dict[str, Any] | None:
    if point is None:
        return None
    return {
        "window_s": point.window_s,
        "fake_negative_rate": point.fake_negative_rate,
        "interval": [point.low, point.high],
        "median_label_wait_s": point.median_label_wait_s,
    }


def _advice(curve: Curve, target: float, current_s: float) -> dict[str, Any]:
    advised = curve.smallest_window(target)
    at_current = next((p for p in curve.points if p.window_s == current_s), None)
    return {
        "advised": _point(advised),
        "current": _point(at_current),
        "sample": {"positives": curve.positives, "cohorts": curve.cohorts, "per_prediction": curve.incidence},
        "horizon_s": curve.horizon_s,
        "curve": [_point(p) for p in curve.points],
    }


def _signals(policy: UseCasePolicy) -> list[str]:
    """The event types whose absence an implicit negative (or an expiry) stands for."""
    return sorted(name for name, rule in policy.events.items() if rule.kind is not EventKind.NEGATIVE)


@router.get("/window", responses=responses(401, 403, 404, 422, 503, said={403: "The key lacks the ops scope."}))
async def advise_window(
    runtime: RuntimeDep,
    use_case: str,
    max_fake_negative_rate: Annotated[float, Query(gt=0, lt=1)] = 0.02,
    event_type: str | None = None,
    horizon_s: Annotated[
        float | None, Query(gt=0, le=MAX_HORIZON_S, description="Default: window + allowed_lateness.")
    ] = None,
) -> Response:
    """Per event type: the fake-negative rate an implicit negative at window W would carry (the
    share of eventual positives arriving after W, censored cohorts not read as negatives) with its
    95% interval and the median label wait, W up to the horizon; the smallest W meeting the target;
    `window_s`: the smallest meeting it for every event type."""
    policy = runtime.policies.use_cases.get(use_case)
    if policy is None:
        known = sorted(runtime.policies.use_cases)
        raise BadRequest(404, "not_found", [problem(["query", "use_case"], f"unknown use case; known: {known}")])
    types = _signals(policy)
    if event_type is not None:
        if event_type not in types:
            raise BadRequest(422, "validation_error", [problem(["query", "event_type"], f"one of {types}")])
        types = [event_type]
    current_s = policy.window.total_seconds()
    horizon = horizon_s or (policy.window + policy.allowed_lateness).total_seconds()
    candidates = sorted({*candidate_windows(horizon), current_s})
    async with runtime.db.read() as conn:
        cohorts = await delay_cohorts(conn, use_case, types, runtime.clock())
    by_type = {
        name: _advice(window_curve(cohorts[name], horizon, candidates), max_fake_negative_rate, current_s)
        for name in types
    }
    # The window for the use case: one that meets the target for every event type seen; none if
    # some seen type needs more than the horizon.
    advised = [a["advised"] for a in by_type.values() if a["sample"]["positives"]]
    body = {
        "use_case": use_case,
        "max_fake_negative_rate": max_fake_negative_rate,
        "current_window_s": current_s,
        "window_s": max(a["window_s"] for a in advised) if advised and all(advised) else None,
        "event_types": by_type,
    }
    return Response(orjson.dumps(body), media_type="application/json")
