from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain def dependency in its thread pool, a thread hop per request
    # (measured: a third of the CPU time of a single-record request went to it).
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
