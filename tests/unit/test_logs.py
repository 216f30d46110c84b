"""Log lines as JSON, and the access line of a request, without a server."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from service.api.access_log import AccessLog
from service.logs import JsonFormatter


async def thing(request: Request) -> Response:
    logging.getLogger("test.inner").warning("inside")
    return PlainTextResponse("ok", status_code=201)


@pytest.fixture
def client() -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/things/{thing_id}", thing)])
    app.add_middleware(AccessLog)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


class Lines(logging.Handler):
    """Formats as it is emitted, in the request's context, as the stderr handler does."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name in ("test.inner", "labelloop.access"):
            self.lines.append(orjson.loads(self.format(record)))


@pytest.fixture
def handler(caplog: pytest.LogCaptureFixture) -> Iterator[Lines]:
    caplog.set_level(logging.INFO)
    handler = Lines()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


async def test_a_request_is_one_line_with_its_route_not_its_path(client: httpx.AsyncClient, handler: Lines) -> None:
    response = await client.get("/things/user:42", headers={"x-request-id": "req-7"})
    assert response.headers["x-request-id"] == "req-7"
    inner, access = handler.lines
    assert inner["msg"] == "inside"
    assert inner["request_id"] == "req-7"  # every line of the request carries its id
    assert access["logger"] == "labelloop.access"
    assert access["level"] == "info"
    assert {k: access[k] for k in ("method", "route", "status", "request_id")} == {
        "method": "GET",
        "route": "/things/{thing_id}",
        "status": 201,
        "request_id": "req-7",
    }
    assert isinstance(access["duration_ms"], float)
    assert str(access["ts"]).endswith("+00:00")
    assert "user:42" not in str(handler.lines)


async def test_a_request_id_is_made_when_none_or_a_bad_one_is_given(client: httpx.AsyncClient) -> None:
    made = (await client.get("/things/a")).headers["x-request-id"]
    replaced = (await client.get("/things/a", headers={"x-request-id": "bad id\twith tab"})).headers["x-request-id"]
    assert len(made) == 32
    assert replaced != "bad id\twith tab"
    assert len(replaced) == 32
    assert made != replaced


def test_an_exception_is_one_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = orjson.loads(line)
    assert parsed["msg"] == "failed here"
    assert "ValueError: boom" in parsed["exc"]
