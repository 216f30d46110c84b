"""Reading a POST body that is one record or {"<collection>": [records]}."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from service.api.errors import BadRequest, from_validation_error, problem

Item = TypeVar("Item", bound=BaseModel)


async def read_records(request: Request, model: type[Item], collection: str, max_batch: int) -> list[Item]:
    """Parse and validate the body; sets request.state.batch for error locations."""
    raw = await request.body()
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, "malformed_json", [problem(["body"], f"not valid JSON: {exc}")]) from exc
    batch = isinstance(body, dict) and collection in body
    request.state.batch = batch
    if not batch:
        try:
            return [model.model_validate(body)]
        except ValidationError as exc:
            raise from_validation_error(exc, ["body"]) from exc
    extra = sorted(set(body) - {collection})
    if extra:
        raise BadRequest(422, "validation_error", [problem(["body", extra[0]], "Extra inputs are not permitted")])
    items = body[collection]
    if not isinstance(items, list):
        raise BadRequest(422, "validation_error", [problem(["body", collection], "Input should be a valid list")])
    if not items:
        raise BadRequest(422, "validation_error", [problem(["body", collection], "must hold at least one record")])
    if len(items) > max_batch:
        raise BadRequest(
            413,
            "batch_too_large",
            [problem(["body", collection], f"{len(items)} records; at most {max_batch}")],
        )
    records: list[Item] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            records.append(model.model_validate(item))
        except ValidationError as exc:
            errors.extend(from_validation_error(exc, ["body", collection, index]).detail)
            if len(errors) >= 100:  # enough to fix a client; a 10,000-record batch could list thousands
                break
    if errors:
        raise BadRequest(422, "validation_error", errors)
    return records
