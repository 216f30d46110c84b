"""What escapes a route, without a database: the JSON answer, the one-line log, the classification."""

from __future__ import annotations

import logging
import sqlite3

import httpx
import pytest
from sqlalchemy import exc as sa_exc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.api.faults import Faults
from service.log_once import RepeatingLog
from service.store.database import store_fault


class PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("pg")
        self.sqlstate = sqlstate


def sqlite_error(name: str) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("sqlite")
    error.sqlite_errorname = name
    return error


async def broken(request: Request) -> Response:
    if request.query_params.get("kind") == "store":
        raise sa_exc.OperationalError("INSERT ...", None, sqlite_error("SQLITE_FULL"))
    raise RuntimeError("features held user:42")


@pytest.fixture
def client() -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/broken", broken)])
    app.add_middleware(Faults)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t")


async def test_a_bug_is_a_json_500_that_does_not_quote_the_data(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "service.api.faults")
    for _ in range(5):
        response = await client.get("/broken")
        assert response.status_code == 500
        assert response.json()["error"] == "internal_error"
        assert "RuntimeError" in response.json()["detail"][0]["msg"]
        assert "user:42" not in response.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "a repeating failure is logged once"
    assert "RuntimeError at" in errors[0].getMessage()
    assert "user:42" not in caplog.text
    assert errors[0].exc_info is None


async def test_a_store_fault_is_a_503_with_retry_after(client: httpx.AsyncClient) -> None:
    response = await client.get("/broken?kind=store")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "SQLITE_FULL" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (sa_exc.OperationalError("s", None, PgError("08006")), True),  # connection failure
        (sa_exc.DBAPIError("s", None, PgError("53100")), True),  # disk full
        (sa_exc.DBAPIError("s", None, PgError("57014")), True),  # statement timeout
        (sa_exc.DBAPIError("s", None, PgError("25006")), True),  # read-only transaction
        (sa_exc.IntegrityError("s", None, PgError("23505")), False),  # a unique violation is ours
        (sa_exc.DBAPIError("s", None, PgError("42P01")), False),  # undefined table: a bug
        (sa_exc.OperationalError("s", None, sqlite_error("SQLITE_READONLY_DBMOVED")), True),
        (sa_exc.OperationalError("s", None, sqlite_error("SQLITE_ERROR")), False),
        (sa_exc.TimeoutError(), True),  # the pool
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (ValueError(), False),
    ],
)
def test_store_faults_are_told_from_bugs(error: BaseException, fault: bool) -> None:
    assert (store_fault(error) is not None) is fault


def test_a_repeating_failure_is_reported_as_a_count() -> None:
    now = [0.0]
    logger = logging.getLogger("test.repeating")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    log = RepeatingLog(logger, every=60, clock=lambda: now[0])
    for second in range(0, 130):
        now[0] = float(second)
        log.failed("k", "sweep failed")
    log.recovered("k", "sweep works")
    assert seen == [
        "sweep failed",
        "sweep failed (60 more since the last report)",
        "sweep failed (60 more since the last report)",
        "sweep works (9 failures not reported)",
    ]
