"""API keys over HTTP, for holders of the admin scope (the first key comes from `labelloop keys create`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from service.api.auth import requires
from service.api.body import body_schema, read_json
from service.api.deps import RuntimeDep
from service.api.errors import BadRequest, from_validation_error, problem, responses
from service.auth.keys import Scope
from service.contract import Id
from service.store import api_keys
from service.store.api_keys import KeyInfo

router = APIRouter(
    prefix="/v1/keys",
    tags=["keys"],
    dependencies=[Depends(requires(Scope.ADMIN))],
    responses=responses(401, 403, 503, said={403: "The key lacks the admin scope."}),
)

Name = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[\w.@:-]+( [\w.@:-]+)*$")]


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    scopes: Annotated[list[Scope], Field(min_length=1)]


def _info(key: KeyInfo) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "name": key.name,
        "scopes": sorted(key.scopes),
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


@router.post("", status_code=201, responses=responses(400, 413, 415, 422), openapi_extra=body_schema(KeyRequest))
async def create_key(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """A new key; its secret is in this answer only."""
    try:
        wanted = KeyRequest.model_validate(await read_json(request, runtime.settings.max_body_bytes))
    except ValidationError as exc:
        raise from_validation_error(exc, ["body"]) from exc
    async with runtime.db.engine.begin() as conn:
        key = await api_keys.create(conn, wanted.name, set(wanted.scopes), runtime.clock())
    await runtime.guard.reload_after_change()
    body = {"key_id": key.key_id, "name": wanted.name, "scopes": sorted(set(wanted.scopes)), "key": key.token}
    return JSONResponse(body, status_code=201)


@router.get("")
async def list_keys(runtime: RuntimeDep) -> JSONResponse:
    async with runtime.db.read() as conn:
        keys = await api_keys.list_keys(conn)
    return JSONResponse({"keys": [_info(key) for key in keys]})


@router.delete("/{key_id}", responses=responses(404, 422, said={404: "No active key by that id."}))
async def revoke_key(key_id: Id, runtime: RuntimeDep) -> JSONResponse:
    async with runtime.db.engine.begin() as conn:
        revoked = await api_keys.revoke(conn, key_id, runtime.clock())
    if not revoked:
        raise BadRequest(404, "not_found", [problem(["path", "key_id"], f"no active key {key_id!r}")])
    await runtime.guard.reload_after_change()
    return JSONResponse({"revoked": key_id})
