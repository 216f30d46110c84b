"""The HTTP ceiling of this stack: a FastAPI route on uvicorn that reads and validates the same JSON
as POST /v1/predictions and /v1/events and stores nothing. Run as `python -m bench.bare PORT`."""

from __future__ import annotations

import sys

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service.contract import EventIn, PredictionIn

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/predictions")
async def predictions(request: Request) -> JSONResponse:
    PredictionIn.model_validate(orjson.loads(await request.body()))
    return JSONResponse({"accepted": 1, "duplicates": 0}, status_code=202)


@app.post("/v1/events")
async def events(request: Request) -> JSONResponse:
    EventIn.model_validate(orjson.loads(await request.body()))
    return JSONResponse({"accepted": 1, "duplicates": 0}, status_code=202)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
