"""The API against its own OpenAPI description (schemathesis), on SQLite and PostgreSQL: every
operation, valid and invalid inputs, with a key holding every scope (so every route is reached) and
with no key at all. No answer is a 5xx, and every answer has a documented status code, content type
and body.

Bounded here (LABELLOOP_FUZZ_EXAMPLES examples per operation, default 25, derandomized so a run
is repeatable, no example database); `make fuzz` raises the count and draws new inputs each run
(LABELLOOP_FUZZ_RANDOM=1)."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.app import create_app
from service.auth.keys import Scope
from service.store import api_keys
from service.store.database import create_engine
from service.store.tables import metadata
from tests.conftest import T0, settings_for

EXAMPLES = int(os.environ.get("LABELLOOP_FUZZ_EXAMPLES", "25"))
DETERMINISTIC = os.environ.get("LABELLOOP_FUZZ_RANDOM") != "1"  # `make fuzz`: new inputs each run
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPEN_ROUTES = {"/healthz", "/readyz"}


async def _fresh_store_with_key(url: str) -> str:
    """An emptied store holding one key with every scope; from then on keys are required."""
    engine = create_engine(url, application_name="labelloop-tests")
    try:
        async with engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(table.delete())
            key = await api_keys.create(conn, "fuzzer", set(Scope), T0)
    finally:
        await engine.dispose()
    return key.token


@pytest.fixture(scope="module")
def fuzzed(migrated_url: str, policies_file: Path) -> Iterator[tuple[FastAPI, str]]:
    """The app and a key with every scope, one per engine: hypothesis calls a test many times
    with the same fixtures. Not the `app` fixture: schemathesis calls the app from its own event
    loop thread and runs its lifespan there, so the engine lives in that loop."""
    token = asyncio.run(_fresh_store_with_key(migrated_url))
    app = create_app(settings_for(migrated_url, policies=policies_file))
    try:
        yield app, token
    finally:
        asgi.shutdown_lifespans()  # the lifespan schemathesis started: engine disposed, lease freed


def _schema() -> schemathesis.BaseSchema:
    """The description the app serves at /openapi.json (the same `app.openapi()`), built without
    a store: the tests are collected before any database exists. (A schema loaded from a fixture,
    schemathesis.pytest.from_fixture, does not run on pytest 9.2.)"""
    config = schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": EXAMPLES, "deterministic": DETERMINISTIC, "database": "none"},
            # Stateful runs follow links between operations; this description declares none.
            "phases": {"stateful": {"enabled": False}},
        }
    )
    app = create_app(settings_for("sqlite+aiosqlite:///:memory:"))
    return schemathesis.openapi.from_dict(app.openapi(), config=config)


schema = _schema()

# Names the policies know, beside whatever was generated: without them nearly every record is an
# unknown use case (422) and nothing is stored, joined, labeled or read back.
USE_CASES = ("recsys", "eta", "fraud")
EVENT_TYPES = ("click", "purchase", "return", "rating", "thumbs", "trip_completed")
PREDICTION_IDS = ("p-1", "p-2")


def _steer(value: Any, rnd: random.Random) -> Any:
    """Each use_case, type and prediction_id in a body or parameters, now and then one the store
    or the policies know."""
    if isinstance(value, list):
        return [_steer(item, rnd) for item in value]
    if not isinstance(value, dict):
        return value
    steered = {key: _steer(item, rnd) for key, item in value.items()}
    for key, known in (("use_case", USE_CASES), ("type", EVENT_TYPES), ("prediction_id", PREDICTION_IDS)):
        if key in steered and rnd.random() < 0.7:
            steered[key] = rnd.choice(known)
    return steered


def _steered(value: Any) -> st.SearchStrategy[Any]:
    return st.randoms(use_true_random=False).map(lambda rnd: _steer(value, rnd))


@schema.hook
def flatmap_body(_: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    return _steered(body)


@schema.hook
def flatmap_path_parameters(_: schemathesis.HookContext, parameters: Any) -> st.SearchStrategy[Any]:
    return _steered(parameters)


@schema.hook
def flatmap_query(_: schemathesis.HookContext, query: Any) -> st.SearchStrategy[Any]:
    return _steered(query)


@schema.parametrize()
def test_every_operation_with_every_scope(case: schemathesis.Case, fuzzed: tuple[FastAPI, str]) -> None:
    app, token = fuzzed
    case.call_and_validate(app=app, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)


@schema.parametrize()
def test_every_operation_without_a_key(case: schemathesis.Case, fuzzed: tuple[FastAPI, str]) -> None:
    app, _ = fuzzed
    response = case.call_and_validate(app=app, checks=CHECKS)
    if case.operation.path not in OPEN_ROUTES and case.method == case.operation.method.upper():
        assert response.status_code == 401, response.text


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_reference_resolves() -> None:
    """A `$ref` into nowhere (say a model's own `#/$defs/...`) leaves the generator a body it cannot
    describe, and schemathesis does not say so."""
    document = create_app(settings_for("sqlite+aiosqlite:///:memory:")).openapi()
    for ref in set(_refs(document)):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node.get(part) if isinstance(node, dict) else None
            assert node is not None, f"{ref} points nowhere"
