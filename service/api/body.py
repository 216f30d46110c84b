"""Reading a POST body that is one record or {"<collection>": [records]}."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from service import strict_json
from service.api.errors import BadRequest, from_validation_error, problem
from service.config import Settings

Item = TypeVar("Item", bound=BaseModel)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline(value, defs) for value in node]
    return node


def body_schema(*models: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` of a route that reads its body itself: a JSON body of one of `models`. Their
    `$defs` inlined, since a `#/$defs/...` reference would point into the OpenAPI document's root."""
    schemas = [model.model_json_schema() for model in models]
    schemas = [_inline(schema, schema.get("$defs", {})) for schema in schemas]
    schema = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _is_json(content_type: str) -> bool:
    return content_type.partition(";")[0].strip().lower() == "application/json"


async def read_json(request: Request, max_bytes: int) -> Any:
    """The parsed JSON body. Only JSON media types: a cross-site form post cannot send one without
    a CORS preflight. The size is checked while reading, before anything is parsed."""
    content_type = request.headers.get("content-type", "")
    if not _is_json(content_type):
        given = repr(content_type) if content_type else "none"
        raise BadRequest(
            415, "unsupported_media_type", [problem(["header", "content-type"], f"{given}; send application/json")]
        )
    too_large = BadRequest(413, "body_too_large", [problem(["body"], f"more than {max_bytes} bytes")])
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    try:
        return strict_json.loads(b"".join(chunks))
    except strict_json.StrictJSONError as exc:
        raise BadRequest(400, "malformed_json", [problem(["body"], str(exc))]) from exc


async def read_records(request: Request, model: type[Item], collection: str, settings: Settings) -> list[Item]:
    """Parse and validate the body; sets request.state.batch for error locations."""
    body = await read_json(request, settings.max_body_bytes)
    max_batch, limits = settings.max_batch, settings.limits
    batch = isinstance(body, dict) and collection in body
    request.state.batch = batch
    if not batch:
        try:
            return [model.model_validate(body, context=limits)]
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
            records.append(model.model_validate(item, context=limits))
        except ValidationError as exc:
            errors.extend(from_validation_error(exc, ["body", collection, index]).detail)
            if len(errors) >= 100:  # enough to fix a client; a 10,000-record batch could list thousands
                break
    if errors:
        raise BadRequest(422, "validation_error", errors)
    return records
